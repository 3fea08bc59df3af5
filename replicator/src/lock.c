/* lock.c - one process per data directory: an flock on LOCK, which holds the owner's pid */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <unistd.h>

#include "replica_private.h"

int rep_lock(int dirfd, const char *dir, crdt_error_t *err)
{
    int fd = openat(dirfd, "LOCK", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        rep_seterr(err, CRDT_EIO, "cannot open %s/LOCK: %s", dir, strerror(errno));
        return -1;
    }
    /* flock, not fcntl: its lock belongs to the open file, so a second open in this same process
     * is refused too, and a snapshot child that inherited the descriptor keeps the directory
     * locked until it is done. The kernel drops it when the holder dies: no stale locks. */
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        char buf[32] = {0};
        ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
        long pid = n > 0 ? strtol(buf, NULL, 10) : 0;
        close(fd);
        if (e == EWOULDBLOCK && pid > 0)
            rep_seterr(err, CRDT_EIO, "data directory %s is locked by another process (pid %ld)",
                       dir, pid);
        else if (e == EWOULDBLOCK)
            rep_seterr(err, CRDT_EIO, "data directory %s is locked by another process", dir);
        else
            rep_seterr(err, CRDT_EIO, "cannot lock %s/LOCK: %s", dir, strerror(e));
        return -1;
    }
    char pid[32];
    int len = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)len, 0) != len) {
        rep_seterr(err, CRDT_EIO, "cannot write %s/LOCK: %s", dir, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}
