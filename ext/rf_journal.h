/* rf_journal.h: what the journal writer (ext/journal.pxd) needs from C:
 * CRC32C, by SSE4.2 where the CPU has it, and a whole vectored write.  The
 * segment and frame layouts are engine/core/layout.py's, like every other
 * record.
 */
#ifndef RF_JOURNAL_H
#define RF_JOURNAL_H

#include <stdint.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <sys/uio.h>

/* --- CRC32C (Castagnoli, reflected 0x82F63B78) ------------------------- */

static uint32_t rf_crc32c_table[256];
static int rf_crc32c_have_table = 0;

static void rf_crc32c_make_table(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ ((c & 1) ? 0x82F63B78u : 0);
        rf_crc32c_table[i] = c;
    }
    rf_crc32c_have_table = 1;
}

static uint32_t rf_crc32c_sw(uint32_t c, const uint8_t *p, size_t n) {
    if (!rf_crc32c_have_table) rf_crc32c_make_table();
    while (n--) c = (c >> 8) ^ rf_crc32c_table[(c ^ *p++) & 0xFF];
    return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2")))
static uint32_t rf_crc32c_hw(uint32_t c, const uint8_t *p, size_t n) {
    uint64_t c64 = c;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c64 = __builtin_ia32_crc32di(c64, v);
        p += 8;
        n -= 8;
    }
    c = (uint32_t)c64;
    while (n--) c = __builtin_ia32_crc32qi(c, *p++);
    return c;
}
#endif

/* CRC32C of n bytes, continuing from a previous result (0 to start). */
static inline uint32_t rf_crc32c(uint32_t crc, const void *data, size_t n) {
    uint32_t c = ~crc;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("sse4.2")) return ~rf_crc32c_hw(c, (const uint8_t *)data, n);
#endif
    return ~rf_crc32c_sw(c, (const uint8_t *)data, n);
}

/* Write every byte of iov[0..n) (writev may take only part), retrying on
 * EINTR: 0, or the errno of the failure. */
static int rf_write_all(int fd, struct iovec *iov, int n) {
    while (n > 0) {
        ssize_t w = writev(fd, iov, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

#endif
