# cython: language_level=3
# A worker's journal writer (docs/journal.md): each span it applies is first
# appended as one CRC32C-framed batch to its shard's segment files, named by
# their first ordinal, without the GIL.  engine/journal/wal.py reads what this
# writes (tests/unit/test_journal.py checks the bytes against its writer).

from libc.stdint cimport int64_t, uint64_t, uint32_t
from libc.string cimport memset
from libc.stdio cimport snprintf
from libc.errno cimport errno
from posix.unistd cimport close, fsync, ftruncate
from posix.stat cimport struct_stat, fstat
from posix.types cimport off_t
from libc.errno cimport EEXIST
from posix.fcntl cimport open as c_open, O_RDONLY, O_WRONLY, O_CREAT, O_APPEND
from layout cimport (Event, JournalSegment, JournalFrame, JOURNAL_MAGIC, JOURNAL_VERSION,
                     JOURNAL_EVENTS)

cdef extern from "<fcntl.h>" nogil:
    enum:
        O_DIRECTORY
        O_CLOEXEC

cdef extern from "<unistd.h>" nogil:
    int fdatasync(int fd)
    int unlinkat(int dirfd, const char *path, int flags)
    int openat(int dirfd, const char *path, int flags, int mode)

cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len

cdef extern from "rf_journal.h" nogil:
    uint32_t rf_crc32c(uint32_t crc, const void *data, size_t n)
    int rf_write_all(int fd, iovec *iov, int n)

ctypedef struct Journal:
    int dirfd                 # the shard's directory
    int fd                    # the open segment; -1 before the first frame
    int64_t size              # bytes of whole frames (and header) in it
    int64_t segment_bytes     # a segment is closed once it holds this much
    uint32_t shard
    bint always               # fdatasync after every frame
    bint dirty                # a failed write is not cut back yet
    uint64_t bytes            # written in all

cdef inline int journal_open(Journal *j, const char *directory, uint32_t shard,
                             int64_t segment_bytes, bint always) noexcept nogil:
    """0, or the errno of opening the shard's directory."""
    memset(j, 0, sizeof(Journal))
    j.fd = -1
    j.dirfd = c_open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if j.dirfd < 0:
        return errno
    j.shard = shard
    j.segment_bytes = segment_bytes
    j.always = always
    return 0

cdef inline int journal_roll(Journal *j, uint64_t first) noexcept nogil:
    """Close the open segment and start one named by the first ordinal it
    will hold.  A file of that name can only be an empty segment a crash
    left (a frame in it would carry that ordinal, and a recovered engine
    starts above every journaled one): it is replaced."""
    cdef char name[32]
    cdef JournalSegment head
    cdef iovec iov
    cdef int err
    cdef struct_stat st
    if j.fd >= 0:
        fdatasync(j.fd)
        close(j.fd)
        j.fd = -1
    snprintf(name, 32, "%020llu.wal", <unsigned long long>first)
    j.fd = openat(j.dirfd, name, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
    if j.fd < 0:
        return errno
    # Never over frames: a start goes past every journaled ordinal, so a
    # file of this name holds at most a header.
    if fstat(j.fd, &st) < 0 or st.st_size > <off_t>sizeof(head):
        err = errno if errno else EEXIST
        close(j.fd)
        j.fd = -1
        return err
    if ftruncate(j.fd, 0) < 0:
        err = errno
        close(j.fd)
        j.fd = -1
        return err
    memset(&head, 0, sizeof(head))
    head.magic = JOURNAL_MAGIC
    head.version = JOURNAL_VERSION
    head.shard = j.shard
    iov.iov_base = &head
    iov.iov_len = sizeof(head)
    err = rf_write_all(j.fd, &iov, 1)
    if err:
        close(j.fd)
        j.fd = -1
        unlinkat(j.dirfd, name, 0)
        return err
    # The name must survive a crash as well as the bytes.
    fsync(j.dirfd)
    j.size = sizeof(head)
    j.bytes += sizeof(head)
    return 0

cdef inline int journal_append(Journal *j, uint64_t base, const Event *a, uint32_t na,
                               const Event *b, uint32_t nb) noexcept nogil:
    """One frame: events a[0..na) then b[0..nb) (a span that wraps its
    ring), the first with ordinal base.  0, or the errno of a failed write,
    after which the segment is cut back to its last whole frame: a frame is
    never left half-written in the middle of the journal."""
    cdef JournalFrame f
    cdef iovec iov[3]
    cdef int err
    if j.dirty:
        # A failed write could not be cut back before: nothing is appended
        # after a torn frame until it is.
        if ftruncate(j.fd, j.size) < 0:
            return errno
        j.dirty = False
    if j.fd < 0 or j.size >= j.segment_bytes:
        err = journal_roll(j, base)
        if err:
            return err
    f.count = na + nb
    f.length = f.count * sizeof(Event)
    f.base = base
    f.kind = JOURNAL_EVENTS
    f.crc = rf_crc32c(0, &f.base, sizeof(JournalFrame) - 8)
    f.crc = rf_crc32c(f.crc, a, na * sizeof(Event))
    f.crc = rf_crc32c(f.crc, b, nb * sizeof(Event))
    iov[0].iov_base = &f
    iov[0].iov_len = sizeof(JournalFrame)
    iov[1].iov_base = <void *>a
    iov[1].iov_len = na * sizeof(Event)
    iov[2].iov_base = <void *>b
    iov[2].iov_len = nb * sizeof(Event)
    err = rf_write_all(j.fd, iov, 3 if nb else 2)
    if not err and j.always and fdatasync(j.fd) < 0:
        err = errno
    if err:
        if ftruncate(j.fd, j.size) < 0:
            # Cut back before the next append, which fails until it can.
            j.dirty = True
        return err
    j.size += sizeof(JournalFrame) + f.length
    j.bytes += sizeof(JournalFrame) + f.length
    return 0

cdef inline int journal_sync(Journal *j) noexcept nogil:
    if j.fd >= 0 and fdatasync(j.fd) < 0:
        return errno
    return 0

cdef inline void journal_close(Journal *j) noexcept nogil:
    if j.fd >= 0:
        fdatasync(j.fd)
        close(j.fd)
        j.fd = -1
    if j.dirfd >= 0:
        close(j.dirfd)
        j.dirfd = -1
