/* What the project's C load clients (bench/iscsi-load.c, bench/vhost-load.c) share: the clock, the block
 * order of bench/pattern.ts's blockPicker, and the latency sample with its percentiles. Header-only
 * (static functions), so each client still builds from one `gcc` command; the TypeScript builders hash
 * this file together with the client's source (bench/c-tools.ts).
 */
#ifndef TWINDISK_LOAD_COMMON_H
#define TWINDISK_LOAD_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* Seconds on the monotonic clock. */
static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The blocks a workload visits, as blockPicker does: in order, or xorshift32 from 0x9e3779b9. */
struct picker {
	int random;
	uint64_t blocks, seq;
	uint32_t rng;
};

static struct picker picker_new(int random, uint64_t blocks)
{
	struct picker p = { .random = random, .blocks = blocks, .seq = 0, .rng = 0x9e3779b9u };
	return p;
}

static uint64_t picker_next(struct picker *p)
{
	if (!p->random) return p->seq++ % p->blocks;
	p->rng ^= p->rng << 13;
	p->rng ^= p->rng >> 17;
	p->rng ^= p->rng << 5;
	return p->rng % p->blocks;
}

/* Every completed request's latency in µs; sorted once at the end for p50 and p99. */
struct latencies {
	double *us;
	size_t n, cap;
};

static void latency_add(struct latencies *l, double us)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 1 << 16;
		l->us = realloc(l->us, l->cap * sizeof(double));
		if (!l->us) {
			fprintf(stderr, "out of memory for latencies\n");
			exit(1);
		}
	}
	l->us[l->n++] = us;
}

static int latency_order(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static void latency_sort(struct latencies *l)
{
	qsort(l->us, l->n, sizeof(double), latency_order);
}

/* The p-quantile of the sorted sample (0 when it is empty). */
static double latency_percentile(const struct latencies *l, double p)
{
	if (l->n == 0) return 0;
	size_t i = (size_t)(p * l->n);
	return l->us[i < l->n ? i : l->n - 1];
}

#endif
