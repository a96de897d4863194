// Limits that the resource file's schema and the engine must agree on, one number each, so that a
// resource file is never accepted with a value the engine then refuses. Limits that the on-disk
// metadata format itself defines stay in metadata.ts (AL_MAX_EXTENTS, derived from the activity-log
// layout) and the wire format in frames.ts (MAX_NODES); the schema imports them from there.

/** The smallest bitmap granularity (bytes per out-of-sync bit): one 4 KiB block. */
export const MIN_GRANULARITY = 4096;
/** The largest bitmap granularity: 2 GiB (the metadata stores it as a power of two below 2^32). */
export const MAX_GRANULARITY = 2 ** 31;
/**
 * The least `al-extents` a resource file may ask for (DRBD's floor; the metadata itself takes 1). The
 * most is metadata.ts's AL_MAX_EXTENTS: one activity-log transaction lists every active extent.
 */
export const MIN_AL_EXTENTS = 7;
/** Virtqueues (and queue worker threads) per vhost-user disk: `serve --queues` and a node's `queues`. */
export const MAX_QUEUES = 64;
