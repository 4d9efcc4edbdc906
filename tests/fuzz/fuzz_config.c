/* libFuzzer target: ferryd.json (config_parse) and the CLI's client.json
 * (cli_config_parse): files an operator writes, or someone who can write
 * them. */
#include <stdint.h>

#include "cli.h"
#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ferryd_config cfg;
	struct cli_config cli;
	struct ferr err;

	if (config_parse((const char *)data, size, "/etc/ferry", "fuzz.json",
			 &cfg, &err) == 0)
		config_clear(&cfg);
	cli_config_parse((const char *)data, size, "/home/op", "client.json",
			 &cli, &err);
	return 0;
}
