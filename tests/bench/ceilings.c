/* ceilings.c: what this host can do at best, measured the way a migration
 * moves pages, so make bench can print each migration's rate as a fraction of
 * its ceiling measured in the same run. One JSON object per line:
 *   {"ceiling": NAME, "threads": N, "bytes": B, "seconds": S, "gb_per_s": R}
 * Ceilings: memcpy; CRC-32 by zlib, libdeflate and ISA-L (the stream's); first-touch writes into a fresh memfd (what
 * a target does to RAM it never had); loopback TCP from a hot buffer into a
 * hot buffer; RAM -> TCP -> never-touched RAM (a migration without a
 * VMM), received straight into a fresh mapping or into a hot buffer written
 * on into a fresh memfd; and a checkpoint's disk: sequential O_DIRECT writes of RAM to a file
 * (fdatasync included) and O_DIRECT reads of it into a hot buffer, 1 MiB per
 * call, one slice per thread, in $TERN_CEILINGS_DIR (default /var/tmp).
 * Usage: ceilings [MIB [THREADS...]] (default 768 MiB, threads 1 2). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <isa-l/crc.h>
#include <libdeflate.h>
#include <zlib.h>

#define PAGE 4096u
#define CHUNK (1u << 20) /* bytes per send/recv call: Tern's batches are this order */
#define MAX_THREADS 16

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "ceilings: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void report(const char *name, unsigned threads, size_t bytes, double seconds)
{
    printf("{\"ceiling\": \"%s\", \"threads\": %u, \"bytes\": %zu, \"seconds\": %.6f, "
           "\"gb_per_s\": %.3f}\n",
           name, threads, bytes, seconds, (double)bytes / seconds / 1e9);
    fflush(stdout);
}

/* Anonymous memory every page of which has been written (a running guest's). */
static uint8_t *populated(size_t size)
{
    uint8_t *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        die("mmap");
    for (size_t i = 0; i < size; i += 8)
        memcpy(p + i, &(uint64_t){ i * 0x9e3779b97f4a7c15ull }, 8);
    return p;
}

/* Shared memfd memory no one has touched: a target's guest RAM. */
static uint8_t *fresh_memfd(size_t size)
{
    int fd = memfd_create("ceilings", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
        die("memfd");
    uint8_t *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        die("mmap memfd");
    close(fd);
    return p;
}

/* ---- Per-thread jobs over a slice [off, off + len) ---- */

struct job {
    uint8_t *src, *dst;
    size_t len;
    int fd;
    int out_fd;      /* ram-tcp-memfd: the memfd the pages are written into */
    size_t file_off; /* file jobs: where the slice starts in the file */
    uint64_t sink;   /* keeps results alive */
};

typedef void *(*job_fn)(void *);

static double run_jobs(job_fn fn, struct job *jobs, unsigned n)
{
    pthread_t tids[MAX_THREADS];
    double t0 = now_s();
    for (unsigned i = 0; i < n; i++)
        if (pthread_create(&tids[i], NULL, fn, &jobs[i]) != 0)
            die("pthread_create");
    for (unsigned i = 0; i < n; i++)
        pthread_join(tids[i], NULL);
    return now_s() - t0;
}

static void *job_memcpy(void *opaque)
{
    struct job *j = opaque;
    memcpy(j->dst, j->src, j->len);
    return NULL;
}

static void *job_crc(void *opaque)
{
    struct job *j = opaque;
    j->sink = crc32_z(0, j->src, j->len);
    return NULL;
}

static void *job_crc_libdeflate(void *opaque)
{
    struct job *j = opaque;
    j->sink = libdeflate_crc32(0, j->src, j->len);
    return NULL;
}

static void *job_crc_isal(void *opaque)
{
    struct job *j = opaque;
    j->sink = crc32_gzip_refl(0, j->src, j->len);
    return NULL;
}

static void *job_first_touch(void *opaque)
{
    struct job *j = opaque;
    for (size_t off = 0; off < j->len; off += PAGE)
        memset(j->dst + off, 0x5a, PAGE);
    return NULL;
}

/* Move (j) chunk by chunk: (step) moves up to (n) bytes at offset (off) of
 * the slice and returns how many (or -1 with errno); (what) names it. */
typedef ssize_t (*step_fn)(struct job *j, size_t off, size_t n);

static void run_steps(struct job *j, step_fn step, const char *what)
{
    for (size_t off = 0; off < j->len;) {
        size_t n = j->len - off < CHUNK ? j->len - off : CHUNK;
        ssize_t r = step(j, off, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            die(what);
        off += (size_t)r;
    }
}

static ssize_t step_send(struct job *j, size_t off, size_t n)
{
    return send(j->fd, j->src + off, n, 0);
}

/* A hot sender rewrites one chunk: loopback TCP without RAM traffic. */
static ssize_t step_send_hot(struct job *j, size_t off, size_t n)
{
    (void)off;
    return send(j->fd, j->src, n, 0);
}

/* Straight into the never-touched mapping: each page faults and is zeroed. */
static ssize_t step_recv(struct job *j, size_t off, size_t n)
{
    return recv(j->fd, j->dst + off, n, MSG_WAITALL);
}

/* Received into a hot buffer, then written into the memfd at its place:
 * a never-touched page is filled by the copy, not zeroed by a fault first. */
static ssize_t step_recv_memfd(struct job *j, size_t off, size_t n)
{
    ssize_t r = recv(j->fd, j->dst, n, MSG_WAITALL);
    if (r > 0 && pwrite(j->out_fd, j->dst, (size_t)r, (off_t)(j->file_off + off)) != r)
        die("pwrite memfd");
    return r;
}

static ssize_t step_recv_hot(struct job *j, size_t off, size_t n)
{
    (void)off;
    return recv(j->fd, j->dst, n, 0);
}

/* O_DIRECT: a checkpoint's page runs, straight from RAM to the disk. */
static ssize_t step_file_write(struct job *j, size_t off, size_t n)
{
    return pwrite(j->fd, j->src + off, n, (off_t)(j->file_off + off));
}

/* O_DIRECT reads into one hot chunk: the disk without first-touch costs. */
static ssize_t step_file_read(struct job *j, size_t off, size_t n)
{
    return pread(j->fd, j->src, n, (off_t)(j->file_off + off));
}

#define JOB(name, step, what) \
    static void *name(void *opaque) \
    { \
        run_steps(opaque, step, what); \
        return NULL; \
    }
JOB(job_send, step_send, "send")
JOB(job_send_hot, step_send_hot, "send")
JOB(job_recv, step_recv, "recv")
JOB(job_recv_memfd, step_recv_memfd, "recv")
JOB(job_recv_hot, step_recv_hot, "recv")
JOB(job_file_write, step_file_write, "pwrite")
JOB(job_file_read, step_file_read, "pread")

/* Write (size) bytes of (src) to a new file with (n) threads, fdatasync it,
 * then read it back; report both. */
static void measure_file(size_t size, unsigned n, uint8_t *src, size_t total)
{
    const char *dir = getenv("TERN_CEILINGS_DIR");
    char path[4096];
    struct job jobs[MAX_THREADS];
    size_t slice = size / n / PAGE * PAGE;
    uint8_t *bufs[MAX_THREADS];
    double t0, secs;
    int fd;

    snprintf(path, sizeof(path), "%s/tern-ceilings-XXXXXX", dir && *dir ? dir : "/var/tmp");
    fd = mkstemp(path);
    if (fd < 0)
        die("mkstemp");
    close(fd);
    fd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
    unlink(path);
    if (fd < 0) {
        fprintf(stderr, "ceilings: %s: no O_DIRECT here (%s): no file ceilings\n", path,
                strerror(errno));
        return;
    }
    for (unsigned i = 0; i < n; i++)
        jobs[i] = (struct job){
            .src = src + i * slice, .len = slice, .fd = fd, .file_off = i * slice
        };
    t0 = now_s();
    run_jobs(job_file_write, jobs, n);
    if (fdatasync(fd) < 0)
        die("fdatasync");
    secs = now_s() - t0;
    report("file-write-direct", n, total, secs);
    for (unsigned i = 0; i < n; i++) {
        if (posix_memalign((void **)&bufs[i], PAGE, CHUNK))
            die("posix_memalign");
        memset(bufs[i], 0, CHUNK);
        jobs[i].src = bufs[i];
    }
    report("file-read-direct", n, total, run_jobs(job_file_read, jobs, n));
    for (unsigned i = 0; i < n; i++)
        free(bufs[i]);
    close(fd);
}

/* (n) connected loopback TCP pairs: (out)[i] sends to (in)[i]. */
static void tcp_pairs(unsigned n, int *out, int *in)
{
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(sa);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(lfd, MAX_THREADS) < 0 || getsockname(lfd, (struct sockaddr *)&sa, &len) < 0)
        die("listen");
    for (unsigned i = 0; i < n; i++) {
        out[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (out[i] < 0 || connect(out[i], (struct sockaddr *)&sa, sizeof(sa)) < 0)
            die("connect");
        in[i] = accept(lfd, NULL, NULL);
        if (in[i] < 0)
            die("accept");
        int one = 1;
        setsockopt(out[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    close(lfd);
}

/* Senders and receivers on (2 n) threads over (n) connections. */
static double run_tcp(unsigned n, job_fn send_fn, job_fn recv_fn, uint8_t *src, uint8_t *dst,
                      size_t size, int memfd)
{
    int out[MAX_THREADS], in[MAX_THREADS];
    struct job jobs[2 * MAX_THREADS];
    size_t slice = size / n / PAGE * PAGE;

    tcp_pairs(n, out, in);
    for (unsigned i = 0; i < n; i++) {
        bool hot = send_fn == job_send_hot;
        jobs[i] = (struct job){ .src = hot ? src : src + i * slice, .len = slice, .fd = out[i] };
        bool buffered = recv_fn == job_recv_hot || recv_fn == job_recv_memfd;
        jobs[n + i] = (struct job){ .dst = buffered ? dst + i * CHUNK : dst + i * slice,
                                    .len = slice,
                                    .fd = in[i],
                                    .out_fd = memfd,
                                    .file_off = i * slice };
    }
    pthread_t tids[2 * MAX_THREADS];
    double t0 = now_s();
    for (unsigned i = 0; i < 2 * n; i++)
        if (pthread_create(&tids[i], NULL, i < n ? send_fn : recv_fn, &jobs[i]) != 0)
            die("pthread_create");
    for (unsigned i = 0; i < 2 * n; i++)
        pthread_join(tids[i], NULL);
    double secs = now_s() - t0;
    for (unsigned i = 0; i < n; i++) {
        close(out[i]);
        close(in[i]);
    }
    return secs;
}

static void slices(struct job *jobs, unsigned n, uint8_t *src, uint8_t *dst, size_t size)
{
    size_t slice = size / n / PAGE * PAGE;
    for (unsigned i = 0; i < n; i++)
        jobs[i] = (struct job){ .src = src ? src + i * slice : NULL,
                                .dst = dst ? dst + i * slice : NULL,
                                .len = slice };
}

static void measure(size_t size, unsigned n, uint8_t *src, uint8_t *hot_dst)
{
    struct job jobs[MAX_THREADS];
    size_t total = size / n / PAGE * PAGE * n;

    uint8_t *dst = populated(size);
    slices(jobs, n, src, dst, size);
    report("memcpy", n, total, run_jobs(job_memcpy, jobs, n));
    munmap(dst, size);

    slices(jobs, n, src, NULL, size);
    report("crc32-zlib", n, total, run_jobs(job_crc, jobs, n));
    report("crc32-libdeflate", n, total, run_jobs(job_crc_libdeflate, jobs, n));
    report("crc32-isal", n, total, run_jobs(job_crc_isal, jobs, n));

    dst = fresh_memfd(size);
    slices(jobs, n, NULL, dst, size);
    report("first-touch", n, total, run_jobs(job_first_touch, jobs, n));
    munmap(dst, size);

    report("tcp-loopback", n, total,
           run_tcp(n, job_send_hot, job_recv_hot, src, hot_dst, size, -1));

    dst = fresh_memfd(size);
    report("ram-tcp-fresh-ram", n, total, run_tcp(n, job_send, job_recv, src, dst, size, -1));
    munmap(dst, size);

    int memfd = memfd_create("ceilings", MFD_CLOEXEC);
    if (memfd < 0 || ftruncate(memfd, (off_t)size) < 0)
        die("memfd");
    report("ram-tcp-memfd", n, total,
           run_tcp(n, job_send, job_recv_memfd, src, hot_dst, size, memfd));
    close(memfd);

    measure_file(size, n, src, total);
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 768;
    unsigned threads[MAX_THREADS] = { 1, 2 };
    unsigned nthreads = 2;

    if (argc > 2) {
        nthreads = 0;
        for (int i = 2; i < argc && nthreads < MAX_THREADS; i++) {
            unsigned long t = strtoul(argv[i], NULL, 10);
            if (t == 0 || t > MAX_THREADS) {
                fprintf(stderr, "ceilings: threads must be 1..%d\n", MAX_THREADS);
                return 2;
            }
            threads[nthreads++] = (unsigned)t;
        }
    }
    if (mib == 0) {
        fprintf(stderr, "usage: ceilings [MIB [THREADS...]]\n");
        return 2;
    }
    size_t size = mib << 20;
    uint8_t *src = populated(size);
    uint8_t *hot_dst = populated((size_t)MAX_THREADS * CHUNK);
    for (unsigned i = 0; i < nthreads; i++)
        measure(size, threads[i], src, hot_dst);
    return 0;
}
