/* attest.c - the /v1/attest routes: the host's TPM identity and quotes
 * (attest.read), credential activation and seal approvals (attest.admin).
 * The TPM itself is behind ctx->attest (attest.h's struct attest_ops). */
#include "api.h"
#include "attest.h"

#include <string.h>

/* POST /v1/attest/quote {"challenge": 64 hex digits}: a quote for the
 * nonce bound to the caller's challenge and to this TLS session. */
static int quote(struct api_ctx *ctx, const struct api_request *req,
		 json_t **reply, struct ferr *err)
{
	static const char *const fields[] = { "challenge", NULL };
	uint8_t challenge[ATTEST_CHALLENGE_LEN], nonce[ATTEST_NONCE_LEN];
	const char *hex = NULL;
	json_t *blob = NULL;

	if (json_check_fields(req->body, fields, "request body", err) < 0 ||
	    json_get_string(req->body, "challenge", "request body",
			    2 * ATTEST_CHALLENGE_LEN, &hex, err) < 0)
		return -1;
	if (!hex || attest_unhex(hex, challenge, sizeof(challenge)) < 0)
		return ferr_set(err, FERR_INVALID,
				"request body.challenge: %d lowercase hex "
				"digits",
				2 * ATTEST_CHALLENGE_LEN);
	if (!req->have_exporter)
		return ferr_set(err, FERR_INTERNAL,
				"no TLS exporter for this connection");
	if (attest_nonce(challenge, ATTEST_CONTEXT_CLI, req->tls_exporter,
			 nonce, err) < 0 ||
	    ctx->attest->quote(ctx->attest->ctx, nonce, &blob, err) < 0)
		return -1;
	*reply = json_pack("{s:o}", "quote", blob);
	return *reply ? 0 : ferr_set(err, FERR_INTERNAL, "out of memory");
}

int api_attest(struct api_ctx *ctx, const struct api_request *req,
	       json_t **reply, struct ferr *err)
{
	if (!ctx->attest || !ctx->attest->quote)
		return ferr_set(err, FERR_CONFLICT,
				"attestation is off on this host (ferryd.json: "
				"attestation)");
	switch (req->route) {
	case ROUTE_ATTEST_IDENTITY:
		return ctx->attest->identity(ctx->attest->ctx, reply, err);
	case ROUTE_ATTEST_QUOTE:
		return quote(ctx, req, reply, err);
	case ROUTE_ATTEST_ACTIVATE:
		return ctx->attest->activate(ctx->attest->ctx, req->body, reply,
					     err);
	case ROUTE_ATTEST_APPROVE:
		if (ctx->attest->approve(ctx->attest->ctx, req->body, err) < 0)
			return -1;
		*reply = json_pack("{s:I}", "approvals",
				   (json_int_t)json_array_size(json_object_get(
					   req->body, "approvals")));
		return *reply ? 0 : ferr_set(err, FERR_INTERNAL,
					     "out of memory");
	default:
		return ferr_set(err, FERR_INTERNAL, "unhandled route");
	}
}
