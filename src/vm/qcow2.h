/* qcow2.h - the part of QEMU's qcow2 header ferryd reads before it hands
 * an image to QEMU (docs/interop/qcow2.txt in QEMU). All fields are
 * big-endian. ferryd refuses images that would make QEMU open another file
 * by a name the image itself carries: an external data file. (Backing
 * files are switched off on QEMU's command line: "backing": null.)
 */
#ifndef FERRY_QCOW2_H
#define FERRY_QCOW2_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

#define QCOW2_MAGIC 0x514649fbU          /* "QFI\xfb" */
#define QCOW2_OFF_MAGIC 0                /* u32 */
#define QCOW2_OFF_VERSION 4              /* u32: 2 or 3 */
#define QCOW2_OFF_INCOMPAT 72            /* u64, version 3 only */
#define QCOW2_V2_HEADER_LEN 72           /* bytes of a version 2 header */
#define QCOW2_V3_HEADER_MIN 104          /* bytes of a version 3 header */
#define QCOW2_INCOMPAT_DATA_FILE (1ULL << 2) /* external data file */

_Static_assert(QCOW2_OFF_VERSION == QCOW2_OFF_MAGIC + 4, "magic is a u32");
_Static_assert(QCOW2_OFF_INCOMPAT == QCOW2_V2_HEADER_LEN,
	       "incompatible_features follows the version 2 header");
_Static_assert(QCOW2_OFF_INCOMPAT + 8 <= QCOW2_V3_HEADER_MIN,
	       "incompatible_features is in every version 3 header");

/* Check the first len bytes of an image that a definition calls qcow2
 * (hostile input): the magic, version 2 or 3, and no external data file.
 * 0, or -1 with FERR_INVALID naming the problem. */
int qcow2_header_check(const unsigned char *buf, size_t len,
		       struct ferr *err);

#endif
