/* iscsi-load: one iSCSI initiator that drives one workload against a LUN and prints one JSON line; the client of `twindisk bench iscsi`.
 *
 * Usage: iscsi-load --url iscsi://HOST:PORT/IQN/LUN --rw read|write --pattern rand|seq
 *                   --bs BYTES --depth N --seconds S [--initiator IQN] [--size BYTES]
 *
 * It logs in with iscsi_full_connect_sync(), reads the LUN's size with READ CAPACITY(16), then keeps
 * `depth` READ(16) or WRITE(16) commands in flight for `seconds` (each completion submits the next
 * one), drives libiscsi's async API from its own poll() loop (iscsi_get_fd / iscsi_which_events /
 * iscsi_service), and drains what is in flight before it stops. Every request's latency (submission
 * to completion callback) is kept, and the sorted sample gives p50 and p99. Each of the `depth` slots
 * owns its buffer: reads land in it through the _iov variant of READ(16), writes are sent from it,
 * so no request allocates or copies in this client.
 *
 * Random workloads visit blocks in the order of bench/pattern.ts's blockPicker (xorshift32 from
 * 0x9e3779b9), so every target sees the same requests. Build: gcc -O2 -o iscsi-load iscsi-load.c -liscsi
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
#include "load-common.h"

/* A request that has not completed after this long ends the run with an error. */
#define STALL_SECONDS 10

struct slot {
	int index;
	unsigned char *buf;
	struct scsi_iovec iov;
	double started; /* seconds, CLOCK_MONOTONIC */
};

struct run {
	struct iscsi_context *iscsi;
	int lun;
	int write;
	uint32_t bs;
	uint32_t block_size; /* the LUN's logical block size */
	struct picker pick;  /* which bs-sized blocks the run visits */
	double end;          /* no new request after this instant */
	int inflight;
	uint64_t done;
	double last_completion;
	struct latencies lat;
	int failed;
};

static void die(const char *what, struct iscsi_context *iscsi)
{
	fprintf(stderr, "iscsi-load: %s%s%s\n", what, iscsi ? ": " : "", iscsi ? iscsi_get_error(iscsi) : "");
	exit(1);
}

static void completed(struct iscsi_context *iscsi, int status, void *command_data, void *private_data);

static void submit(struct run *r, struct slot *s)
{
	uint64_t lba = picker_next(&r->pick) * (r->bs / r->block_size);
	struct scsi_task *task;
	s->started = now();
	if (r->write)
		task = iscsi_write16_iov_task(r->iscsi, r->lun, lba, NULL, r->bs, r->block_size, 0, 0, 0, 0, 0,
					      completed, s, &s->iov, 1);
	else
		task = iscsi_read16_iov_task(r->iscsi, r->lun, lba, r->bs, r->block_size, 0, 0, 0, 0, 0,
					     completed, s, &s->iov, 1);
	if (task == NULL) die(r->write ? "could not queue WRITE(16)" : "could not queue READ(16)", r->iscsi);
	r->inflight++;
}

static struct run *the_run;

static void completed(struct iscsi_context *iscsi, int status, void *command_data, void *private_data)
{
	struct run *r = the_run;
	struct slot *s = private_data;
	struct scsi_task *task = command_data;
	double t = now();
	r->inflight--;
	r->last_completion = t;
	if (status != SCSI_STATUS_GOOD) {
		if (status == SCSI_STATUS_CHECK_CONDITION && task)
			fprintf(stderr, "iscsi-load: %s failed: %s (0x%x) %s (0x%04x)\n", r->write ? "WRITE(16)" : "READ(16)",
				scsi_sense_key_str(task->sense.key), task->sense.key,
				scsi_sense_ascq_str(task->sense.ascq), task->sense.ascq);
		else
			fprintf(stderr, "iscsi-load: %s failed with status 0x%x: %s\n", r->write ? "WRITE(16)" : "READ(16)",
				status, iscsi_get_error(iscsi));
		r->failed = 1;
	} else {
		latency_add(&r->lat, (t - s->started) * 1e6);
		r->done++;
	}
	if (task) scsi_free_scsi_task(task);
	if (!r->failed && t < r->end) submit(r, s);
}

static void usage(void)
{
	fprintf(stderr, "usage: iscsi-load --url iscsi://HOST:PORT/IQN/LUN --rw read|write --pattern rand|seq --bs BYTES --depth N --seconds S [--initiator IQN] [--size BYTES]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *url = NULL, *rw = "read", *pattern = "rand";
	const char *initiator = "iqn.2026-12.io.twindisk:bench-initiator";
	uint64_t bs = 4096, size = 0;
	int depth = 1;
	double seconds = 5;
	static const struct option opts[] = {
		{ "url", required_argument, 0, 'u' }, { "rw", required_argument, 0, 'r' },
		{ "pattern", required_argument, 0, 'p' }, { "bs", required_argument, 0, 'b' },
		{ "depth", required_argument, 0, 'd' }, { "seconds", required_argument, 0, 's' },
		{ "initiator", required_argument, 0, 'i' }, { "size", required_argument, 0, 'z' },
		{ 0, 0, 0, 0 },
	};
	for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
		switch (c) {
		case 'u': url = optarg; break;
		case 'r': rw = optarg; break;
		case 'p': pattern = optarg; break;
		case 'b': bs = strtoull(optarg, NULL, 0); break;
		case 'd': depth = atoi(optarg); break;
		case 's': seconds = atof(optarg); break;
		case 'i': initiator = optarg; break;
		case 'z': size = strtoull(optarg, NULL, 0); break;
		default: usage();
		}
	}
	if (!url || (strcmp(rw, "read") && strcmp(rw, "write")) || (strcmp(pattern, "rand") && strcmp(pattern, "seq"))
	    || bs == 0 || bs > (64u << 20) || depth < 1 || depth > 1024 || !(seconds > 0))
		usage();

	struct run r = { .write = !strcmp(rw, "write"), .bs = (uint32_t)bs };
	the_run = &r;
	r.iscsi = iscsi_create_context(initiator);
	if (!r.iscsi) die("could not create an iSCSI context", NULL);
	struct iscsi_url *u = iscsi_parse_full_url(r.iscsi, url);
	if (!u) die("bad URL", r.iscsi);
	iscsi_set_targetname(r.iscsi, u->target);
	iscsi_set_session_type(r.iscsi, ISCSI_SESSION_NORMAL);
	iscsi_set_header_digest(r.iscsi, ISCSI_HEADER_DIGEST_NONE);
	r.lun = u->lun;
	if (iscsi_full_connect_sync(r.iscsi, u->portal, u->lun) != 0) die("login failed", r.iscsi);

	struct scsi_task *cap = iscsi_readcapacity16_sync(r.iscsi, r.lun);
	if (!cap || cap->status != SCSI_STATUS_GOOD) die("READ CAPACITY(16) failed", r.iscsi);
	struct scsi_readcapacity16 *rc16 = scsi_datain_unmarshall(cap);
	if (!rc16) die("could not parse READ CAPACITY(16) data", NULL);
	r.block_size = rc16->block_length;
	uint64_t lun_bytes = (rc16->returned_lba + 1) * (uint64_t)rc16->block_length;
	scsi_free_scsi_task(cap);
	if (r.block_size == 0 || bs % r.block_size) {
		fprintf(stderr, "iscsi-load: --bs %" PRIu64 " is not a multiple of the LUN's %u-byte blocks\n", bs, r.block_size);
		return 1;
	}
	if (size == 0 || size > lun_bytes) size = lun_bytes;
	r.pick = picker_new(!strcmp(pattern, "rand"), size / bs);
	if (r.pick.blocks == 0) die("the LUN is smaller than one request", NULL);

	struct slot *slots = calloc(depth, sizeof *slots);
	for (int i = 0; i < depth; i++) {
		slots[i].index = i;
		if (posix_memalign((void **)&slots[i].buf, 4096, bs)) die("out of memory for buffers", NULL);
		memset(slots[i].buf, 0xa5 ^ i, bs);
		slots[i].iov.iov_base = slots[i].buf;
		slots[i].iov.iov_len = bs;
	}

	double t0 = now();
	r.end = t0 + seconds;
	r.last_completion = t0;
	for (int i = 0; i < depth; i++) submit(&r, &slots[i]);
	while (r.inflight > 0) {
		struct pollfd pfd = { .fd = iscsi_get_fd(r.iscsi), .events = iscsi_which_events(r.iscsi) };
		int n = poll(&pfd, 1, 1000);
		if (n < 0 && errno != EINTR) die("poll failed", NULL);
		if (iscsi_service(r.iscsi, n > 0 ? pfd.revents : 0) < 0) die("the connection failed", r.iscsi);
		if (r.inflight > 0 && now() - r.last_completion > STALL_SECONDS) {
			fprintf(stderr, "iscsi-load: %d requests did not complete within %d s\n", r.inflight, STALL_SECONDS);
			return 1;
		}
	}
	double secs = r.last_completion - t0;
	if (r.failed) return 1;

	latency_sort(&r.lat);
	printf("{\"rw\":\"%s\",\"pattern\":\"%s\",\"bs\":%" PRIu64 ",\"depth\":%d,\"seconds\":%.3f,\"ios\":%" PRIu64
	       ",\"iops\":%.0f,\"mbps\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f,\"lun_bytes\":%" PRIu64 ",\"block_size\":%u}\n",
	       rw, pattern, bs, depth, secs, r.done, r.done / secs, r.done * (double)bs / secs / 1e6,
	       latency_percentile(&r.lat, 0.5), latency_percentile(&r.lat, 0.99), lun_bytes, r.block_size);
	fflush(stdout);

	iscsi_logout_sync(r.iscsi);
	iscsi_destroy_url(u);
	iscsi_destroy_context(r.iscsi);
	for (int i = 0; i < depth; i++) free(slots[i].buf);
	free(slots);
	free(r.lat.us);
	return 0;
}
