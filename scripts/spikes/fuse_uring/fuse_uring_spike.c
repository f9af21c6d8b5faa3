/*
 * FUSE-over-io_uring spike: how long is one request round trip through
 * /dev/fuse read()/write() versus through the io_uring transport
 * (CONFIG_FUSE_IO_URING, kernel 6.14+)?  Not part of logstorfs; a measuring
 * tool only.  See README.md next to it.
 *
 *   fuse_uring_spike serve classic|uring|uring_dt MOUNTPOINT
 *       mounts a two-node filesystem (root dir, file "f" of 1 MiB of zeros)
 *       and serves it in the foreground until unmounted or sent SIGTERM;
 *       prints "ready" on stdout once requests can flow, and on SIGTERM the
 *       count of requests served by each path on stderr.  uring_dt is uring
 *       with IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN rings.
 *   fuse_uring_spike bench FILE N
 *       opens FILE with O_DIRECT, then times N fstat() calls and N 4 KiB
 *       pread()s; prints "fstat_us pread_us" (mean microseconds per call).
 *
 * Replies carry attr_valid 0 so every fstat() is a GETATTR, and OPEN answers
 * FOPEN_DIRECT_IO so every pread() is a READ.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* The io_uring part of the FUSE ABI (7.42), absent from Debian 12's
 * <linux/fuse.h> (7.38); layouts as in the kernel's include/uapi/linux/fuse.h. */
#ifndef FUSE_OVER_IO_URING
#define FUSE_OVER_IO_URING (1ULL << 41)
#endif
#ifndef FUSE_URING_IN_OUT_HEADER_SZ
#define FUSE_URING_IN_OUT_HEADER_SZ 128
#define FUSE_URING_OP_IN_OUT_SZ 128
struct fuse_uring_ent_in_out {
	uint64_t flags;
	uint64_t commit_id;  /* to echo in the COMMIT_AND_FETCH command */
	uint32_t payload_sz; /* bytes used in the payload buffer, both ways */
	uint32_t padding;
	uint64_t reserved;
};
struct fuse_uring_req_header {
	char in_out[FUSE_URING_IN_OUT_HEADER_SZ]; /* fuse_in_header / fuse_out_header */
	char op_in[FUSE_URING_OP_IN_OUT_SZ];      /* the opcode's first in-argument */
	struct fuse_uring_ent_in_out ring_ent_in_out;
};
enum { FUSE_IO_URING_CMD_REGISTER = 1, FUSE_IO_URING_CMD_COMMIT_AND_FETCH = 2 };
struct fuse_uring_cmd_req { /* in the 80-byte command area of an SQE128 */
	uint64_t flags;
	uint64_t commit_id;
	uint16_t qid;
	uint8_t padding[6];
};
#endif

#define FILE_INO 2
#define FILE_SIZE (1 << 20)
#define MAX_WRITE (128 * 1024)
#define MAX_PAGES 32
#define PAYLOAD_SZ (MAX_PAGES * 4096) /* >= the kernel's max_payload_sz */
#define ENTS_PER_QUEUE 2
#define MAX_QUEUES 64

static int fuse_fd = -1;
static int uring_mode;
static unsigned ring_flags = IORING_SETUP_SQE128;
static atomic_ulong served_classic, served_uring;
static char zeros[PAYLOAD_SZ];

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static void fill_attr(struct fuse_attr *a, uint64_t ino)
{
	memset(a, 0, sizeof(*a));
	a->ino = ino;
	a->blksize = 4096;
	if (ino == FUSE_ROOT_ID) {
		a->mode = S_IFDIR | 0755;
		a->nlink = 2;
	} else {
		a->mode = S_IFREG | 0644;
		a->nlink = 1;
		a->size = FILE_SIZE;
		a->blocks = FILE_SIZE / 512;
	}
}

/*
 * Answers one request.  arg0 is the opcode's first in-argument (fuse_read_in
 * for READ, the name for LOOKUP in the classic layout); name is where a LOOKUP
 * name is.  Writes the reply body into out (or points *outp at it) and returns
 * its length, or a negative errno, or INT32_MIN for "no reply".
 */
#define NO_REPLY INT32_MIN
static int handle(const struct fuse_in_header *in, const void *arg0, const char *name,
		  char *out, const void **outp)
{
	*outp = out;
	switch (in->opcode) {
	case FUSE_LOOKUP: {
		if (in->nodeid != FUSE_ROOT_ID || strcmp(name, "f") != 0)
			return -ENOENT;
		struct fuse_entry_out *e = (void *)out;
		memset(e, 0, sizeof(*e));
		e->nodeid = FILE_INO;
		e->entry_valid = 3600; /* names cached, attributes not */
		fill_attr(&e->attr, FILE_INO);
		return sizeof(*e);
	}
	case FUSE_GETATTR: {
		if (in->nodeid != FUSE_ROOT_ID && in->nodeid != FILE_INO)
			return -ENOENT;
		struct fuse_attr_out *a = (void *)out;
		memset(a, 0, sizeof(*a));
		a->attr_valid = 0; /* every stat is a request */
		fill_attr(&a->attr, in->nodeid);
		return sizeof(*a);
	}
	case FUSE_OPEN:
	case FUSE_OPENDIR: {
		struct fuse_open_out *o = (void *)out;
		memset(o, 0, sizeof(*o));
		o->open_flags = in->opcode == FUSE_OPEN ? FOPEN_DIRECT_IO : 0;
		return sizeof(*o);
	}
	case FUSE_READ: {
		const struct fuse_read_in *r = arg0;
		uint64_t n = r->offset >= FILE_SIZE ? 0 : FILE_SIZE - r->offset;
		if (n > r->size)
			n = r->size;
		if (n > PAYLOAD_SZ)
			n = PAYLOAD_SZ;
		*outp = zeros;
		return (int)n;
	}
	case FUSE_READDIR:
		return 0; /* an empty listing is enough here */
	case FUSE_STATFS: {
		struct fuse_statfs_out *s = (void *)out;
		memset(s, 0, sizeof(*s));
		s->st.bsize = s->st.frsize = 4096;
		s->st.namelen = 255;
		return sizeof(*s);
	}
	case FUSE_RELEASE:
	case FUSE_RELEASEDIR:
	case FUSE_FLUSH:
	case FUSE_ACCESS:
	case FUSE_DESTROY:
		return 0;
	case FUSE_FORGET:
	case FUSE_BATCH_FORGET:
	case FUSE_INTERRUPT:
		return NO_REPLY;
	default:
		return -ENOSYS;
	}
}

/* ---- classic transport: read() a request, write() the reply ------------- */

static void reply_classic(uint64_t unique, int res, const void *body)
{
	struct fuse_out_header oh = {.unique = unique};
	struct iovec iov[2] = {{&oh, sizeof(oh)}, {(void *)body, 0}};
	if (res < 0)
		oh.error = res;
	else
		iov[1].iov_len = res;
	oh.len = sizeof(oh) + iov[1].iov_len;
	if (writev(fuse_fd, iov, 2) < 0 && errno != ENOENT)
		perror("writev /dev/fuse");
}

static void answer_init(const struct fuse_in_header *in, const struct fuse_init_in *ii)
{
	struct fuse_init_out o;
	memset(&o, 0, sizeof(o));
	o.major = FUSE_KERNEL_VERSION;
	o.minor = ii->minor < 42 ? ii->minor : 42;
	o.max_readahead = ii->max_readahead;
	o.flags = FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_MAX_PAGES | FUSE_INIT_EXT;
	o.flags2 = 0;
	if (uring_mode)
		o.flags2 = (uint32_t)(FUSE_OVER_IO_URING >> 32);
	o.max_background = 16;
	o.congestion_threshold = 12;
	o.max_write = MAX_WRITE;
	o.time_gran = 1;
	o.max_pages = MAX_PAGES;
	reply_classic(in->unique, sizeof(o), &o);
}

static void start_queues(void);

static void *classic_loop(void *unused)
{
	static char buf[MAX_WRITE + 4096];
	static char out[4096];
	(void)unused;
	for (;;) {
		ssize_t n = read(fuse_fd, buf, sizeof(buf));
		if (n < 0) {
			if (errno == EINTR || errno == ENOENT || errno == EAGAIN)
				continue;
			if (errno != ENODEV)
				perror("read /dev/fuse");
			exit(0); /* unmounted */
		}
		struct fuse_in_header *in = (void *)buf;
		if (in->opcode == FUSE_INIT) {
			answer_init(in, (void *)(in + 1));
			if (uring_mode)
				start_queues();
			else {
				printf("ready\n");
				fflush(stdout);
			}
			continue;
		}
		const void *body;
		int res = handle(in, in + 1, (const char *)(in + 1), out, &body);
		atomic_fetch_add_explicit(&served_classic, 1, memory_order_relaxed);
		if (res != NO_REPLY)
			reply_classic(in->unique, res, body);
	}
	return NULL;
}

/* ---- io_uring transport: one queue (ring + thread) per possible CPU ------ */

struct ent {
	struct fuse_uring_req_header hdr;
	struct iovec iov[2];
	char *payload;
};

struct queue {
	int qid;
	struct io_uring ring;
	struct ent ents[ENTS_PER_QUEUE];
	pthread_t thread;
};

static struct queue queues[MAX_QUEUES];
static int nr_queues;
static atomic_int queues_registered;

static struct io_uring_sqe *prep_cmd(struct queue *q, struct ent *e, uint32_t op, uint64_t commit_id)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&q->ring);
	if (!sqe) {
		fprintf(stderr, "queue %d: no free SQE\n", q->qid);
		exit(1);
	}
	memset(sqe, 0, 128); /* an SQE128 */
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = fuse_fd;
	sqe->cmd_op = op;
	sqe->user_data = (uint64_t)(uintptr_t)e;
	if (op == FUSE_IO_URING_CMD_REGISTER) {
		sqe->addr = (uint64_t)(uintptr_t)e->iov;
		sqe->len = 2;
	}
	struct fuse_uring_cmd_req *req = (void *)sqe->cmd;
	req->qid = q->qid;
	req->commit_id = commit_id;
	return sqe;
}

static void serve_uring_ent(struct queue *q, struct ent *e)
{
	struct fuse_in_header *in = (void *)e->hdr.in_out;
	struct fuse_in_header inh = *in;
	uint64_t commit_id = e->hdr.ring_ent_in_out.commit_id;
	static __thread char out[4096];
	const void *body;
	/* In the ring layout the first in-argument is in op_in, the rest (a
	 * LOOKUP's name) in the payload buffer. */
	int res = handle(&inh, e->hdr.op_in, e->payload, out, &body);
	atomic_fetch_add_explicit(&served_uring, 1, memory_order_relaxed);
	struct fuse_out_header *oh = (void *)e->hdr.in_out;
	memset(oh, 0, sizeof(*oh));
	oh->unique = inh.unique;
	uint32_t len = 0;
	if (res == NO_REPLY) /* not expected on the ring; answer anyway */
		res = 0;
	if (res < 0)
		oh->error = res;
	else
		len = res;
	if (len && body != e->payload)
		memcpy(e->payload, body, len);
	oh->len = sizeof(*oh) + len;
	e->hdr.ring_ent_in_out.payload_sz = len;
	prep_cmd(q, e, FUSE_IO_URING_CMD_COMMIT_AND_FETCH, commit_id);
}

static void *queue_loop(void *arg)
{
	struct queue *q = arg;
	cpu_set_t cpus;
	CPU_ZERO(&cpus);
	CPU_SET(q->qid, &cpus);
	pthread_setaffinity_np(pthread_self(), sizeof(cpus), &cpus);

	int err = io_uring_queue_init(ENTS_PER_QUEUE * 2, &q->ring, ring_flags);
	if (err) {
		fprintf(stderr, "queue %d: io_uring_queue_init: %s\n", q->qid, strerror(-err));
		exit(1);
	}
	for (int i = 0; i < ENTS_PER_QUEUE; i++) {
		struct ent *e = &q->ents[i];
		e->payload = aligned_alloc(4096, PAYLOAD_SZ);
		e->iov[0] = (struct iovec){&e->hdr, sizeof(e->hdr)};
		e->iov[1] = (struct iovec){e->payload, PAYLOAD_SZ};
		prep_cmd(q, e, FUSE_IO_URING_CMD_REGISTER, 0);
	}
	err = io_uring_submit(&q->ring);
	if (err != ENTS_PER_QUEUE) {
		fprintf(stderr, "queue %d: submit REGISTER: %d (%s)\n", q->qid, err,
			err < 0 ? strerror(-err) : "short");
		exit(1);
	}
	/* A failed REGISTER completes at once with the errno; a good one only
	 * completes when a request arrives.  Peek briefly for an error. */
	struct io_uring_cqe *cqe;
	struct __kernel_timespec ts = {.tv_nsec = 50 * 1000 * 1000};
	err = io_uring_wait_cqe_timeout(&q->ring, &cqe, &ts);
	if (err == 0 && cqe->res < 0) {
		fprintf(stderr, "queue %d: FUSE_IO_URING_CMD_REGISTER failed: %s (%d)\n", q->qid,
			strerror(-cqe->res), cqe->res);
		exit(1);
	}
	if (atomic_fetch_add(&queues_registered, 1) + 1 == nr_queues) {
		printf("ready\n");
		fflush(stdout);
	}
	for (;;) {
		/* one io_uring_enter: submit the commits of the last batch, wait
		 * for the next request */
		err = io_uring_submit_and_wait(&q->ring, 1);
		if (err == -EINTR)
			continue;
		if (err < 0) {
			fprintf(stderr, "queue %d: submit_and_wait: %s\n", q->qid, strerror(-err));
			exit(1);
		}
		unsigned head, seen = 0;
		io_uring_for_each_cqe(&q->ring, head, cqe) {
			struct ent *e = (void *)(uintptr_t)cqe->user_data;
			seen++;
			if (cqe->res < 0) {
				if (cqe->res == -ENOTCONN || cqe->res == -ECANCELED)
					exit(0); /* connection gone: unmounted */
				fprintf(stderr, "queue %d: ring command failed: %s (%d)\n", q->qid,
					strerror(-cqe->res), cqe->res);
				exit(1);
			}
			serve_uring_ent(q, e);
		}
		io_uring_cq_advance(&q->ring, seen);
	}
	return NULL;
}

/* num_possible_cpus(): the highest CPU in /sys/devices/system/cpu/possible, plus one */
static int possible_cpus(void)
{
	FILE *f = fopen("/sys/devices/system/cpu/possible", "r");
	char line[256];
	if (!f || !fgets(line, sizeof(line), f))
		die("/sys/devices/system/cpu/possible");
	fclose(f);
	char *last = line;
	for (char *p = line; *p; p++)
		if (*p == '-' || *p == ',')
			last = p + 1;
	return atoi(last) + 1;
}

static void start_queues(void)
{
	/* The kernel makes one queue per possible CPU and only switches to the
	 * ring once every queue has an entry registered. */
	nr_queues = possible_cpus();
	if (nr_queues > MAX_QUEUES)
		nr_queues = MAX_QUEUES;
	for (int i = 0; i < nr_queues; i++) {
		queues[i].qid = i;
		if (pthread_create(&queues[i].thread, NULL, queue_loop, &queues[i]))
			die("pthread_create");
	}
}

static void on_term(int sig)
{
	char msg[128];
	(void)sig;
	int n = snprintf(msg, sizeof(msg), "served: classic %lu uring %lu\n",
			 atomic_load(&served_classic), atomic_load(&served_uring));
	if (write(2, msg, n) < 0) {
	}
	_exit(0);
}

static int serve(const char *mode, const char *mnt)
{
	if (!strcmp(mode, "uring"))
		uring_mode = 1;
	else if (!strcmp(mode, "uring_dt")) {
		/* task work (the kernel handing a request to the queue thread) run
		 * when the thread waits, instead of by signalling it */
		uring_mode = 1;
		ring_flags |= IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
	} else if (strcmp(mode, "classic"))
		return 2;
	signal(SIGTERM, on_term);
	signal(SIGINT, on_term);
	fuse_fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	if (fuse_fd < 0)
		die("open /dev/fuse");
	char opts[128];
	snprintf(opts, sizeof(opts), "fd=%d,rootmode=40000,user_id=0,group_id=0", fuse_fd);
	if (mount("fuse_uring_spike", mnt, "fuse.fuse_uring_spike", MS_NOSUID | MS_NODEV, opts))
		die("mount");
	classic_loop(NULL); /* also serves FORGETs, which never go on the ring */
	return 0;
}

/* ---- the client ---------------------------------------------------------- */

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int bench(const char *path, long n)
{
	int fd = open(path, O_RDONLY | O_DIRECT);
	if (fd < 0)
		die("open");
	char *buf = aligned_alloc(4096, 4096);
	struct stat st;
	for (int i = 0; i < 2000; i++) { /* warm up */
		if (fstat(fd, &st) || pread(fd, buf, 4096, 0) != 4096)
			die("warm-up");
	}
	double t0 = now_us();
	for (long i = 0; i < n; i++)
		if (fstat(fd, &st))
			die("fstat");
	double t1 = now_us();
	for (long i = 0; i < n; i++)
		if (pread(fd, buf, 4096, (i % 64) * 4096) != 4096)
			die("pread");
	double t2 = now_us();
	printf("%.3f %.3f\n", (t1 - t0) / n, (t2 - t1) / n);
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "serve"))
		return serve(argv[2], argv[3]);
	if (argc == 4 && !strcmp(argv[1], "bench"))
		return bench(argv[2], atol(argv[3]));
	fprintf(stderr, "usage: %s serve classic|uring|uring_dt MOUNTPOINT | bench FILE N\n", argv[0]);
	return 2;
}
