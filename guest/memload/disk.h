/*
 * disk.h - memload's disk mode (memload.disk=/dev/vdX): every heartbeat,
 * memload checks that the generation record on the block device is the
 * one its memory says it wrote last, then writes the heartbeat's sequence
 * number there. After a checkpoint-HA failover (ferry's docs/ha.md) the
 * disk and the memory must come from the same instant: a disk that is
 * newer (the old primary's later writes) or older than the memory is a
 * mismatch, counted as an error.
 *
 * The record is one 4096-byte block at offset 0, written with O_DIRECT
 * and O_SYNC: {magic u64, generation u64, ~generation u64}, native
 * endianness (the guest reads what it wrote). A write in flight when the
 * VM was stopped may have reached the disk before memload saw it return,
 * so both the last finished and the pending generation are accepted.
 */
#ifndef MEMLOAD_DISK_H
#define MEMLOAD_DISK_H

#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DISK_MAGIC UINT64_C(0x4b5349444c4d454d) /* "MEMLDISK" */
#define DISK_BLOCK 4096u

struct disk {
	int fd;            /* -1: disk mode off */
	uint64_t *block;   /* DISK_BLOCK bytes, aligned for O_DIRECT */
	uint64_t written;  /* generation whose write returned */
	uint64_t pending;  /* generation being written */
	uint64_t mismatches;
};

/* Open path and write generation 0. Out: 0, or -1 (errno set). */
static int disk_open(struct disk *d, const char *path)
{
	void *p = NULL;

	d->fd = open(path, O_RDWR | O_DIRECT | O_SYNC | O_CLOEXEC);
	if (d->fd < 0)
		return -1;
	if (posix_memalign(&p, DISK_BLOCK, DISK_BLOCK) != 0)
		return -1;
	d->block = p;
	d->written = d->pending = 0;
	d->mismatches = 0;
	memset(d->block, 0, DISK_BLOCK);
	d->block[0] = DISK_MAGIC;
	d->block[1] = 0;
	d->block[2] = ~UINT64_C(0);
	return pwrite(d->fd, d->block, DISK_BLOCK, 0) == DISK_BLOCK ? 0 : -1;
}

/* Read the record: *gen gets its generation. Out: 0 when it agrees with
 * memory, 1 on a mismatch (or a torn / foreign record: *gen is then
 * UINT64_MAX), -1 when the read fails (errno set). */
static int disk_check(struct disk *d, uint64_t *gen)
{
	if (pread(d->fd, d->block, DISK_BLOCK, 0) != DISK_BLOCK)
		return -1;
	*gen = d->block[0] == DISK_MAGIC && d->block[2] == ~d->block[1]
		       ? d->block[1]
		       : UINT64_MAX;
	if (*gen == d->written || *gen == d->pending)
		return 0;
	d->mismatches++;
	return 1;
}

/* Write generation gen. Out: 0, or -1 (errno set). */
static int disk_write(struct disk *d, uint64_t gen)
{
	d->pending = gen;
	d->block[0] = DISK_MAGIC;
	d->block[1] = gen;
	d->block[2] = ~gen;
	if (pwrite(d->fd, d->block, DISK_BLOCK, 0) != DISK_BLOCK)
		return -1;
	d->written = gen;
	return 0;
}

#endif
