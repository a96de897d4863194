/* vhost-load: a light vhost-user-blk front-end (QEMU's role, and the guest driver's) that drives one workload against a
 * back-end's socket and prints one JSON line; the benchmark driver for `twindisk serve --socket` and its peers.
 *
 * Usage: vhost-load --socket PATH --rw read|write --pattern rand|seq --bs BYTES --depth N --seconds S
 *                   [--queues N] [--size BYTES] [--spin] [--indirect] [--no-event-idx]
 *
 * It connects to the unix socket and sets the device up in the order QEMU does (hw/virtio/vhost-user.c,
 * docs/interop/vhost-user.rst): GET_FEATURES, GET/SET_PROTOCOL_FEATURES (MQ, REPLY_ACK and CONFIG
 * when offered), GET_QUEUE_NUM, SET_OWNER, GET_CONFIG (the capacity), SET_FEATURES (VERSION_1,
 * PROTOCOL_FEATURES, EVENT_IDX, INDIRECT_DESC and the virtio-blk bits a Linux guest takes), SET_MEM_TABLE
 * with one memfd region at guest-physical 0 (the fd passed with SCM_RIGHTS, the same memory mapped
 * here as "guest memory"), then for each queue SET_VRING_NUM/BASE/ADDR/KICK/CALL of a split virtqueue
 * and SET_VRING_ENABLE 1. With REPLY_ACK negotiated every message without a reply of its own is sent
 * with NEED_REPLY and its acknowledgement checked, so a refusal stops the run with the request's name.
 *
 * Then it keeps `depth` virtio-blk requests in flight for `seconds` (slot i on queue i % N; each
 * completion submits the slot's next request), and drains what is in flight before it stops. A
 * request is a chain of three descriptors: the 16-byte header (VIRTIO_BLK_T_IN or T_OUT and the
 * sector), the slot's data buffer (device-writable for reads) and the status byte; with --indirect
 * the chain is an indirect table of the same three, as a Linux guest sends it. Every slot owns its
 * descriptors, header, status byte and a `bs`-byte data buffer in guest memory, all set up before
 * the run: a submission writes the header's sector, the status byte and one avail ring entry. Write
 * buffers are filled once with a non-zero pattern: byte j of every buffer is 1 + j % 251.
 *
 * Notifications go as between a guest and QEMU/KVM: a kick is an 8-byte write to the queue's kick
 * eventfd, only when the device asks for it (EVENT_IDX's avail_event, else VRING_USED_F_NO_NOTIFY);
 * completions are waited for with poll() on the call eventfds (and the socket, to notice a back-end
 * that goes away), read() to clear them, then the used ring is reaped and used_event set (and the
 * ring checked again) as Linux's virtblk_done() does. With --spin the used ring is polled instead
 * and the device is asked not to signal. At the end each ring is stopped with GET_VRING_BASE, as
 * QEMU stops a device, and its last_avail_idx checked against what was submitted.
 *
 * Random workloads visit blocks in the order of bench/pattern.ts's blockPicker (xorshift32 from
 * 0x9e3779b9), sequential ones in order, wrapping around the volume (or the first --size bytes).
 * Every request's latency (submission to the wake-up that reaped it) is kept; the sorted sample gives
 * p50 and p99. Output: {"iops":N,"mbps":N,"p50_us":N,"p99_us":N,"requests":N} (MB/s in 10^6 bytes).
 * Errors (socket refused, back-end closed, a refused message, status != VIRTIO_BLK_S_OK, no completion
 * for 10 s) are reported on stderr with exit status 1; bad usage exits 2.
 *
 * Build: gcc -O2 -Wall -o vhost-load vhost-load.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include "load-common.h"

/* A request that has not completed after this long ends the run with an error; so does a message the back-end does not answer. */
#define STALL_SECONDS 10
#define REPLY_SECONDS 10

/* vhost-user requests (front-end to back-end). */
enum {
	GET_FEATURES = 1, SET_FEATURES = 2, SET_OWNER = 3, SET_MEM_TABLE = 5, SET_VRING_NUM = 8, SET_VRING_ADDR = 9,
	SET_VRING_BASE = 10, GET_VRING_BASE = 11, SET_VRING_KICK = 12, SET_VRING_CALL = 13, GET_PROTOCOL_FEATURES = 15,
	SET_PROTOCOL_FEATURES = 16, GET_QUEUE_NUM = 17, SET_VRING_ENABLE = 18, GET_CONFIG = 24,
};
#define HDR_SIZE 12
#define FLAG_VERSION 0x1u
#define FLAG_REPLY 0x4u
#define FLAG_NEED_REPLY 0x8u
#define MAX_PAYLOAD 4096

/* Feature bits. */
#define F_BLK_SEG_MAX 2
#define F_BLK_SIZE 6
#define F_BLK_FLUSH 9
#define F_BLK_TOPOLOGY 10
#define F_BLK_CONFIG_WCE 11
#define F_BLK_MQ 12
#define F_RING_INDIRECT_DESC 28
#define F_RING_EVENT_IDX 29
#define F_PROTOCOL_FEATURES 30
#define F_VERSION_1 32
#define PF_MQ 0
#define PF_REPLY_ACK 3
#define PF_CONFIG 9
#define BIT(n) (1ull << (n))

/* Split virtqueue and virtio-blk. */
#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY 1
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_S_OK 0
#define BLK_CONFIG_SIZE 60 /* struct virtio_blk_config up to write_zeroes_may_unmap, as QEMU reads it */

struct desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

struct blk_hdr {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
};

/* Per-slot metadata in guest memory: header, status byte, and room for a 3-entry indirect table. */
#define META_SIZE 128
#define META_STATUS 16
#define META_TABLE 64

struct queue {
	int index;
	unsigned num;
	int event_idx;
	struct desc *desc;
	volatile uint16_t *avail; /* flags, idx, ring[num], used_event */
	volatile uint8_t *used;   /* flags(u16), idx(u16), ring[num] of {u32 id, u32 len}, avail_event(u16) */
	int kick_fd, call_fd;
	uint16_t avail_idx;       /* the avail idx to publish next */
	uint16_t kicked_at;       /* the avail idx when a kick was last decided */
	uint16_t last_used;
	int *slot_of_head;        /* chain head -> slot */
};

struct slot {
	struct queue *q;
	uint16_t head;
	struct blk_hdr *hdr;
	volatile uint8_t *status;
	double started;
};

static const char *req_name(uint32_t r)
{
	switch (r) {
	case GET_FEATURES: return "GET_FEATURES";
	case SET_FEATURES: return "SET_FEATURES";
	case SET_OWNER: return "SET_OWNER";
	case SET_MEM_TABLE: return "SET_MEM_TABLE";
	case SET_VRING_NUM: return "SET_VRING_NUM";
	case SET_VRING_ADDR: return "SET_VRING_ADDR";
	case SET_VRING_BASE: return "SET_VRING_BASE";
	case GET_VRING_BASE: return "GET_VRING_BASE";
	case SET_VRING_KICK: return "SET_VRING_KICK";
	case SET_VRING_CALL: return "SET_VRING_CALL";
	case GET_PROTOCOL_FEATURES: return "GET_PROTOCOL_FEATURES";
	case SET_PROTOCOL_FEATURES: return "SET_PROTOCOL_FEATURES";
	case GET_QUEUE_NUM: return "GET_QUEUE_NUM";
	case SET_VRING_ENABLE: return "SET_VRING_ENABLE";
	case GET_CONFIG: return "GET_CONFIG";
	default: return "request";
	}
}

static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("vhost-load: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}


/* ---- the vhost-user connection ------------------------------------------------------------------ */

static int sock = -1;
static int reply_ack; /* REPLY_ACK negotiated: NEED_REPLY on every message without a reply of its own */

static void send_msg(uint32_t req, const void *payload, uint32_t len, const int *fds, int nfds, int need_reply)
{
	unsigned char buf[HDR_SIZE + MAX_PAYLOAD];
	uint32_t h[3] = { req, FLAG_VERSION | (need_reply ? FLAG_NEED_REPLY : 0), len };
	memcpy(buf, h, HDR_SIZE);
	if (len) memcpy(buf + HDR_SIZE, payload, len);
	size_t total = HDR_SIZE + len, sent = 0;
	union {
		char buf[CMSG_SPACE(8 * sizeof(int))];
		struct cmsghdr align;
	} control;
	while (sent < total) {
		struct iovec iov = { buf + sent, total - sent };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
		if (nfds > 0 && sent == 0) {
			/* The fds go with the first byte, which the back-end receives with the header. */
			memset(&control, 0, sizeof control);
			mh.msg_control = control.buf;
			mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
			struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
			memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
		}
		ssize_t n = sendmsg(sock, &mh, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR) continue;
		if (n < 0) die("cannot send %s: %s%s", req_name(req), strerror(errno), errno == EPIPE || errno == ECONNRESET ? " (the back-end closed the connection)" : "");
		sent += n;
	}
}

static void recv_exact(void *p, size_t n, uint32_t req)
{
	size_t got = 0;
	while (got < n) {
		struct pollfd pfd = { .fd = sock, .events = POLLIN };
		int r = poll(&pfd, 1, REPLY_SECONDS * 1000);
		if (r < 0 && errno == EINTR) continue;
		if (r < 0) die("poll failed: %s", strerror(errno));
		if (r == 0) die("the back-end did not answer %s within %d s", req_name(req), REPLY_SECONDS);
		ssize_t k = recv(sock, (char *)p + got, n - got, 0);
		if (k < 0 && errno == EINTR) continue;
		if (k < 0) die("cannot receive the reply to %s: %s", req_name(req), strerror(errno));
		if (k == 0) die("the back-end closed the connection instead of answering %s", req_name(req));
		got += k;
	}
}

/* Reads the reply to `req`; returns its payload size (at most `max` bytes copied into `out`). */
static uint32_t get_reply(uint32_t req, void *out, uint32_t max)
{
	uint32_t h[3];
	unsigned char payload[MAX_PAYLOAD];
	recv_exact(h, HDR_SIZE, req);
	if ((h[1] & 3) != FLAG_VERSION || !(h[1] & FLAG_REPLY))
		die("the reply to %s has bad flags 0x%x", req_name(req), h[1]);
	if (h[0] != req) die("got a reply to %s (%u) while waiting for %s", req_name(h[0]), h[0], req_name(req));
	if (h[2] > MAX_PAYLOAD) die("the reply to %s has a payload of %u bytes", req_name(req), h[2]);
	if (h[2]) recv_exact(payload, h[2], req);
	memcpy(out, payload, h[2] < max ? h[2] : max);
	return h[2];
}

/* A request answered with a u64 (GET_FEATURES, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM). */
static uint64_t get_u64(uint32_t req)
{
	uint64_t v = 0;
	send_msg(req, NULL, 0, NULL, 0, 0);
	uint32_t n = get_reply(req, &v, sizeof v);
	if (n != 8) die("the reply to %s has %u bytes, expected 8", req_name(req), n);
	return v;
}

/* A request without a reply of its own; acknowledged when REPLY_ACK was negotiated. */
static void set(uint32_t req, const void *payload, uint32_t len, const int *fds, int nfds)
{
	send_msg(req, payload, len, fds, nfds, reply_ack);
	if (!reply_ack) return;
	uint64_t status = 0;
	uint32_t n = get_reply(req, &status, sizeof status);
	if (n != 8) die("the acknowledgement of %s has %u bytes, expected 8", req_name(req), n);
	if (status != 0) die("the back-end refused %s (REPLY_ACK status %" PRIu64 "; its log says why)", req_name(req), status);
}

static void set_u64(uint32_t req, uint64_t v)
{
	set(req, &v, 8, NULL, 0);
}

static void set_state(uint32_t req, uint32_t index, uint32_t num)
{
	uint32_t s[2] = { index, num };
	set(req, s, 8, NULL, 0);
}

/* While requests run, the socket should stay silent: readable means closed (or a message nobody asked for). */
static void check_socket(short revents)
{
	if (!(revents & (POLLIN | POLLHUP | POLLERR))) return;
	char c;
	ssize_t n = recv(sock, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) die("the back-end closed the connection during the run");
	if (n > 0) die("the back-end sent a message nobody asked for during the run");
}

/* ---- the workload ------------------------------------------------------------------------------- */

struct run {
	int write, random, spin, indirect, event_idx;
	uint32_t bs;
	struct picker pick;
	double end;
	int inflight;
	uint64_t done;
	double last_completion;
	struct latencies lat;
};


static inline uint16_t used_idx(struct queue *q)
{
	return __atomic_load_n((volatile uint16_t *)(q->used + 2), __ATOMIC_ACQUIRE);
}

static inline volatile uint16_t *avail_event(struct queue *q)
{
	return (volatile uint16_t *)(q->used + 4 + 8 * q->num);
}

static inline volatile uint16_t *used_event(struct queue *q)
{
	return &q->avail[2 + q->num];
}

static void submit(struct run *r, struct slot *s, double t)
{
	struct queue *q = s->q;
	s->hdr->sector = picker_next(&r->pick) * (r->bs / 512);
	*s->status = 0xff;
	s->started = t;
	q->avail[2 + (q->avail_idx & (q->num - 1))] = s->head;
	q->avail_idx++;
	r->inflight++;
}


static uint64_t kicks, wakeups;

/* Makes what was added visible, and kicks when the device asked for it (Linux's virtqueue_kick_prepare, then notify). */
static void publish(struct queue *q)
{
	uint16_t old = q->kicked_at, new = q->avail_idx;
	if (old == new) return;
	__atomic_store_n(&q->avail[1], new, __ATOMIC_RELEASE);
	/* The device may have looked at the ring before our store: it wrote avail_event (or cleared NO_NOTIFY) first. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	q->kicked_at = new;
	int kick;
	if (q->event_idx) {
		uint16_t ev = __atomic_load_n(avail_event(q), __ATOMIC_RELAXED);
		kick = (uint16_t)(new - ev - 1) < (uint16_t)(new - old);
	} else {
		kick = !(__atomic_load_n((volatile uint16_t *)q->used, __ATOMIC_RELAXED) & VIRTQ_USED_F_NO_NOTIFY);
	}
	if (!kick) return;
	uint64_t one = 1;
	if (write(q->kick_fd, &one, 8) != 8) die("cannot kick queue %d: %s", q->index, strerror(errno));
	kicks++;
}

static void record(struct run *r, double us)
{
	latency_add(&r->lat, us);
}

/*
 * Reaps queue `q`'s completions at time `t`, submitting each slot's next request while the run
 * lasts; returns how many completed. Then, as virtblk_done() with virtqueue_enable_cb(), it sets
 * used_event to ask for a call at the next completion and looks at the ring once more, so no
 * completion can slip in unsignalled. Spinning, it asks for no calls at all.
 */
static int reap(struct run *r, struct queue *q, struct slot *slots, double t)
{
	int n = 0;
	for (;;) {
		uint16_t idx = used_idx(q);
		while (q->last_used != idx) {
			volatile uint32_t *e = (volatile uint32_t *)(q->used + 4 + 8 * (q->last_used & (q->num - 1)));
			uint32_t id = e[0];
			q->last_used++;
			int si = id < q->num ? q->slot_of_head[id] : -1;
			if (si < 0) die("queue %d: the device returned chain head %u, which is not a request's", q->index, id);
			struct slot *s = &slots[si];
			uint8_t st = *s->status;
			if (st != VIRTIO_BLK_S_OK)
				die("%s of %u bytes at sector %" PRIu64 " failed: status %u (%s)", r->write ? "write" : "read", r->bs,
				    s->hdr->sector, st, st == 1 ? "VIRTIO_BLK_S_IOERR" : st == 2 ? "VIRTIO_BLK_S_UNSUPP" : st == 0xff ? "never written" : "unknown");
			record(r, (t - s->started) * 1e6);
			r->done++;
			r->inflight--;
			n++;
			if (t < r->end) submit(r, s, t);
		}
		if (!q->event_idx) return n;
		if (r->spin) {
			*used_event(q) = q->last_used + 0x8000;
			return n;
		}
		__atomic_store_n(used_event(q), q->last_used, __ATOMIC_RELAXED);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if (used_idx(q) == q->last_used) return n;
	}
}

static void usage(void)
{
	fprintf(stderr, "usage: vhost-load --socket PATH --rw read|write --pattern rand|seq --bs BYTES --depth N --seconds S\n"
			"                  [--queues N] [--size BYTES] [--spin] [--indirect] [--no-event-idx] [--verbose]\n");
	exit(2);
}

static uint64_t align_up(uint64_t x, uint64_t a)
{
	return (x + a - 1) & ~(a - 1);
}

int main(int argc, char **argv)
{
	const char *path = NULL, *rw = NULL, *pattern = NULL;
	uint64_t bs = 0, size = 0;
	int depth = 0, nq = 1, spin = 0, indirect = 0, no_event_idx = 0, verbose = 0;
	double seconds = 0;
	static const struct option opts[] = {
		{ "socket", required_argument, 0, 'S' }, { "rw", required_argument, 0, 'r' },
		{ "pattern", required_argument, 0, 'p' }, { "bs", required_argument, 0, 'b' },
		{ "depth", required_argument, 0, 'd' }, { "seconds", required_argument, 0, 's' },
		{ "queues", required_argument, 0, 'q' }, { "size", required_argument, 0, 'z' },
		{ "spin", no_argument, 0, 'P' }, { "indirect", no_argument, 0, 'I' },
		{ "no-event-idx", no_argument, 0, 'E' }, { "verbose", no_argument, 0, 'v' },
		{ 0, 0, 0, 0 },
	};
	for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
		switch (c) {
		case 'S': path = optarg; break;
		case 'r': rw = optarg; break;
		case 'p': pattern = optarg; break;
		case 'b': bs = strtoull(optarg, NULL, 0); break;
		case 'd': depth = atoi(optarg); break;
		case 's': seconds = atof(optarg); break;
		case 'q': nq = atoi(optarg); break;
		case 'z': size = strtoull(optarg, NULL, 0); break;
		case 'P': spin = 1; break;
		case 'I': indirect = 1; break;
		case 'E': no_event_idx = 1; break;
		case 'v': verbose = 1; break;
		default: usage();
		}
	}
	if (optind != argc || !path || !rw || !pattern || (strcmp(rw, "read") && strcmp(rw, "write")) || (strcmp(pattern, "rand") && strcmp(pattern, "seq"))
	    || bs == 0 || bs % 512 || bs > (64u << 20) || depth < 1 || depth > 4096 || !(seconds > 0) || nq < 1 || nq > 256 || depth < nq)
		usage();

	struct run r = { .write = !strcmp(rw, "write"), .random = !strcmp(pattern, "rand"), .spin = spin, .indirect = indirect,
			 .bs = (uint32_t)bs };

	/* Connect. */
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof sa.sun_path) die("socket path %s is too long", path);
	strcpy(sa.sun_path, path);
	sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sock < 0) die("socket: %s", strerror(errno));
	if (connect(sock, (struct sockaddr *)&sa, sizeof sa) < 0) die("cannot connect to %s: %s (is the back-end running?)", path, strerror(errno));

	/* Features, as vhost_user_backend_init() and vhost_dev_init() ask for them. */
	uint64_t offered = get_u64(GET_FEATURES);
	if (!(offered & BIT(F_VERSION_1))) die("the back-end does not offer VIRTIO_F_VERSION_1 (features 0x%" PRIx64 ")", offered);
	uint64_t protocol = 0;
	if (offered & BIT(F_PROTOCOL_FEATURES)) {
		uint64_t pf = get_u64(GET_PROTOCOL_FEATURES);
		protocol = pf & (BIT(PF_MQ) | BIT(PF_REPLY_ACK) | BIT(PF_CONFIG));
		send_msg(SET_PROTOCOL_FEATURES, &protocol, 8, NULL, 0, 0);
		reply_ack = (protocol & BIT(PF_REPLY_ACK)) != 0;
		if (protocol & BIT(PF_MQ)) {
			uint64_t n = get_u64(GET_QUEUE_NUM);
			if (n < (uint64_t)nq) die("the back-end has %" PRIu64 " queues, %d wanted (serve it with --queues %d)", n, nq, nq);
		}
	}
	if (nq > 1 && !(protocol & BIT(PF_MQ))) die("the back-end does not offer several queues (protocol feature MQ), %d wanted", nq);
	set(SET_OWNER, NULL, 0, NULL, 0);

	/* The capacity (vhost_user_blk_realize() reads the config space with GET_CONFIG). */
	uint64_t volume = 0;
	uint32_t blk_size = 512;
	if (protocol & BIT(PF_CONFIG)) {
		unsigned char p[12 + BLK_CONFIG_SIZE] = { 0 }, reply[12 + BLK_CONFIG_SIZE];
		uint32_t hdr[3] = { 0, BLK_CONFIG_SIZE, 0 };
		memcpy(p, hdr, 12);
		send_msg(GET_CONFIG, p, sizeof p, NULL, 0, 0);
		uint32_t n = get_reply(GET_CONFIG, reply, sizeof reply);
		if (n != sizeof reply) die("the reply to GET_CONFIG has %u bytes, expected %zu", n, sizeof reply);
		uint64_t sectors;
		memcpy(&sectors, reply + 12, 8);
		volume = sectors * 512;
		if (offered & BIT(F_BLK_SIZE)) memcpy(&blk_size, reply + 12 + 20, 4);
		if (blk_size < 512) blk_size = 512;
	} else if (size == 0) {
		die("the back-end does not offer its config space (protocol feature CONFIG): give the volume's size with --size");
	}
	if (size == 0 || (volume && size > volume)) size = volume;
	if (bs % blk_size) die("--bs %" PRIu64 " is not a multiple of the device's %u-byte blocks", bs, blk_size);
	r.pick = picker_new(r.random, size / bs);
	if (r.pick.blocks == 0) die("the volume (%" PRIu64 " bytes) is smaller than one request", size);

	uint64_t want = BIT(F_VERSION_1) | BIT(F_PROTOCOL_FEATURES) | BIT(F_RING_INDIRECT_DESC) | BIT(F_BLK_SEG_MAX) | BIT(F_BLK_SIZE)
			| BIT(F_BLK_FLUSH) | BIT(F_BLK_TOPOLOGY) | BIT(F_BLK_CONFIG_WCE) | BIT(F_BLK_MQ);
	if (!no_event_idx) want |= BIT(F_RING_EVENT_IDX);
	uint64_t features = offered & want;
	if (indirect && !(features & BIT(F_RING_INDIRECT_DESC))) die("--indirect: the back-end does not offer VIRTIO_F_RING_INDIRECT_DESC");
	r.event_idx = (features & BIT(F_RING_EVENT_IDX)) != 0;
	set_u64(SET_FEATURES, features);

	/* Guest memory: per queue a ring (desc, avail, used on its own page), then per slot its header and status, then the data buffers. */
	int per_queue = (depth + nq - 1) / nq;
	unsigned num = 128; /* QEMU's vhost-user-blk queue-size default */
	while (num < (unsigned)per_queue * (indirect ? 1 : 3)) num <<= 1;
	if (num > 32768) die("--depth %d needs more than 32768 descriptors per queue", depth);
	uint64_t avail_off = 16ull * num, used_off = align_up(avail_off + 6 + 2 * num, 4096);
	uint64_t ring_bytes = align_up(used_off + 6 + 8ull * num, 4096);
	uint64_t meta_off = nq * ring_bytes, data_off = meta_off + align_up((uint64_t)depth * META_SIZE, 4096);
	uint64_t stride = align_up(bs, 4096), total = data_off + depth * stride;
	int memfd = memfd_create("vhost-load-guest", MFD_CLOEXEC);
	if (memfd < 0 || ftruncate(memfd, total) < 0) die("cannot create %" PRIu64 " bytes of guest memory: %s", total, strerror(errno));
	unsigned char *mem = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, memfd, 0);
	if (mem == MAP_FAILED) die("cannot map %" PRIu64 " bytes of guest memory: %s", total, strerror(errno));

	struct queue *queues = calloc(nq, sizeof *queues);
	struct slot *slots = calloc(depth, sizeof *slots);
	if (!queues || !slots) die("out of memory");
	for (int i = 0; i < nq; i++) {
		struct queue *q = &queues[i];
		unsigned char *base = mem + i * ring_bytes;
		q->index = i;
		q->num = num;
		q->event_idx = r.event_idx;
		q->desc = (struct desc *)base;
		q->avail = (volatile uint16_t *)(base + avail_off);
		q->used = base + used_off;
		q->slot_of_head = malloc(num * sizeof(int));
		if (!q->slot_of_head) die("out of memory");
		for (unsigned k = 0; k < num; k++) q->slot_of_head[k] = -1;
		if (spin) q->avail[0] = VIRTQ_AVAIL_F_NO_INTERRUPT;
	}
	for (int i = 0; i < depth; i++) {
		struct slot *s = &slots[i];
		struct queue *q = &queues[i % nq];
		unsigned k = i / nq;
		uint64_t meta = meta_off + (uint64_t)i * META_SIZE, data = data_off + i * stride;
		s->q = q;
		s->hdr = (struct blk_hdr *)(mem + meta);
		s->status = mem + meta + META_STATUS;
		s->hdr->type = r.write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN;
		s->hdr->reserved = 0;
		unsigned char *buf = mem + data;
		if (r.write)
			for (uint64_t j = 0; j < bs; j++) buf[j] = 1 + j % 251;
		else
			memset(buf, 0, bs);
		struct desc chain[3] = {
			{ meta, sizeof(struct blk_hdr), VIRTQ_DESC_F_NEXT, 1 },
			{ data, (uint32_t)bs, VIRTQ_DESC_F_NEXT | (r.write ? 0 : VIRTQ_DESC_F_WRITE), 2 },
			{ meta + META_STATUS, 1, VIRTQ_DESC_F_WRITE, 0 },
		};
		if (indirect) {
			memcpy(mem + meta + META_TABLE, chain, sizeof chain);
			s->head = k;
			q->desc[k] = (struct desc){ meta + META_TABLE, sizeof chain, VIRTQ_DESC_F_INDIRECT, 0 };
		} else {
			s->head = 3 * k;
			for (int d = 0; d < 3; d++) {
				chain[d].next = d < 2 ? 3 * k + d + 1 : 0;
				q->desc[3 * k + d] = chain[d];
			}
		}
		q->slot_of_head[s->head] = i;
	}

	/* The memory table: one region at guest-physical 0; its user address is where it is mapped here. */
	struct {
		uint32_t nregions, padding;
		uint64_t gpa, size, uaddr, mmap_offset;
	} table = { 1, 0, 0, total, (uint64_t)(uintptr_t)mem, 0 };
	set(SET_MEM_TABLE, &table, sizeof table, &memfd, 1);

	/* The rings, as vhost_virtqueue_start() sets each up, then enabled (vhost_dev_start()). */
	for (int i = 0; i < nq; i++) {
		struct queue *q = &queues[i];
		set_state(SET_VRING_NUM, i, num);
		set_state(SET_VRING_BASE, i, 0);
		struct {
			uint32_t index, flags;
			uint64_t desc, used, avail, log;
		} addr = { i, 0, (uint64_t)(uintptr_t)q->desc, (uint64_t)(uintptr_t)q->used, (uint64_t)(uintptr_t)q->avail, 0 };
		set(SET_VRING_ADDR, &addr, sizeof addr, NULL, 0);
		q->kick_fd = eventfd(0, EFD_CLOEXEC);
		q->call_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (q->kick_fd < 0 || q->call_fd < 0) die("eventfd: %s", strerror(errno));
		uint64_t word = i;
		set(SET_VRING_KICK, &word, 8, &q->kick_fd, 1);
		set(SET_VRING_CALL, &word, 8, &q->call_fd, 1);
	}
	if (features & BIT(F_PROTOCOL_FEATURES))
		for (int i = 0; i < nq; i++) set_state(SET_VRING_ENABLE, i, 1);

	/* The run. */
	struct pollfd *pfds = calloc(nq + 1, sizeof *pfds);
	if (!pfds) die("out of memory");
	for (int i = 0; i < nq; i++) pfds[i] = (struct pollfd){ .fd = queues[i].call_fd, .events = POLLIN };
	pfds[nq] = (struct pollfd){ .fd = sock, .events = POLLIN };
	double t0 = now();
	r.end = t0 + seconds;
	r.last_completion = t0;
	for (int i = 0; i < depth; i++) submit(&r, &slots[i], t0);
	for (int i = 0; i < nq; i++) publish(&queues[i]);
	uint64_t loops = 0;
	while (r.inflight > 0) {
		if (!spin) {
			int n = poll(pfds, nq + 1, 1000);
			if (n < 0 && errno != EINTR) die("poll failed: %s", strerror(errno));
			if (n > 0) {
				check_socket(pfds[nq].revents);
				for (int i = 0; i < nq; i++) {
					uint64_t v;
					if ((pfds[i].revents & POLLIN) && read(queues[i].call_fd, &v, 8) == 8) wakeups++;
				}
			}
		} else if ((++loops & 0xfff) == 0) {
			if (poll(&pfds[nq], 1, 0) > 0) check_socket(pfds[nq].revents);
		}
		double t = now();
		int got = 0;
		for (int i = 0; i < nq; i++) got += reap(&r, &queues[i], slots, t);
		for (int i = 0; i < nq; i++) publish(&queues[i]);
		if (got) r.last_completion = t;
		else if (t - r.last_completion > STALL_SECONDS)
			die("%d requests did not complete within %d s (the back-end's log may say why)", r.inflight, STALL_SECONDS);
	}
	double secs = r.last_completion - t0;

	/* Stop the rings as QEMU does (GET_VRING_BASE); every request submitted must have been consumed. */
	for (int i = 0; i < nq; i++) {
		uint32_t st[2] = { (uint32_t)i, 0 }, rep[2] = { 0, 0 };
		send_msg(GET_VRING_BASE, st, 8, NULL, 0, 0);
		uint32_t n = get_reply(GET_VRING_BASE, rep, sizeof rep);
		if (n != 8) die("the reply to GET_VRING_BASE has %u bytes, expected 8", n);
		if ((uint16_t)rep[1] != queues[i].avail_idx)
			die("queue %d stopped at avail index %u, but %u requests were made available", i, rep[1], queues[i].avail_idx);
	}
	close(sock);

	latency_sort(&r.lat);
	printf("{\"iops\":%.0f,\"mbps\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f,\"requests\":%" PRIu64 "}\n",
	       r.done / secs, r.done * (double)bs / secs / 1e6, latency_percentile(&r.lat, 0.5), latency_percentile(&r.lat, 0.99), r.done);
	fflush(stdout);
	if (verbose)
		fprintf(stderr, "vhost-load: %" PRIu64 " requests in %.3f s on %d queue(s) of %u, event_idx %d, %s; %" PRIu64 " kicks (%.3f per request), %"
			PRIu64 " call wake-ups (%.3f per request)\n", r.done, secs, nq, num, r.event_idx, spin ? "spinning" : "poll()",
			kicks, r.done ? (double)kicks / r.done : 0, wakeups, r.done ? (double)wakeups / r.done : 0);

	for (int i = 0; i < nq; i++) {
		close(queues[i].kick_fd);
		close(queues[i].call_fd);
		free(queues[i].slot_of_head);
	}
	munmap(mem, total);
	close(memfd);
	free(queues);
	free(slots);
	free(pfds);
	free(r.lat.us);
	return 0;
}
