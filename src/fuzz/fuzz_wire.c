/* libFuzzer target for wire.c: every C function that reads bytes from the network or the caller.
 * The first input byte picks the function; the checks abort on any broken invariant. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../wire.h"

static void check(int ok)
{
    if (!ok)
        abort();
}

static int unhex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void on_header(void *ud, const char *name, size_t nl, const char *v, size_t vl)
{
    size_t *seen = ud;
    (*seen)++;
    check(nl >= 1 && nl <= CRM_HEADER_NAME_MAX);
    for (size_t i = 0; i < nl; i++)
        check(!(name[i] >= 'A' && name[i] <= 'Z') && name[i] != ':' && name[i] != '\n');
    for (size_t i = 0; i < vl; i++)
        check(v[i] != '\n');
    check(vl == 0 || (v[0] != ' ' && v[0] != '\t' && v[vl - 1] != '\r'));
}

static void fuzz_escape(const char *s, size_t n)
{
    char *out = malloc(3 * n + 1);
    check(out != NULL);
    size_t o = crm_escape(s, n, out);
    check(o >= n && o <= 3 * n);
    /* Decoding gives the input back, and only unreserved characters stay literal. */
    size_t j = 0;
    for (size_t i = 0; i < o; i++) {
        char c = out[i];
        if (c == '%') {
            check(i + 2 < o);
            int hi = unhex(out[i + 1]), lo = unhex(out[i + 2]);
            check(hi >= 0 && lo >= 0);
            check(j < n && (unsigned char)s[j] == (unsigned char)(hi * 16 + lo));
            i += 2;
        } else {
            check((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.' || c == '_' || c == '~');
            check(j < n && s[j] == c);
        }
        j++;
    }
    check(j == n);
    free(out);
}

static void fuzz_headers(const char *s, size_t n)
{
    size_t seen = 0, lines = 1;
    for (size_t i = 0; i < n; i++)
        lines += s[i] == '\n';
    size_t count = crm_parse_headers(s, n, on_header, &seen);
    check(count == seen && count <= lines);
}

static void fuzz_ctl(const char *s, size_t n)
{
    int naive = memchr(s, '\r', n) || memchr(s, '\n', n) || memchr(s, '\0', n);
    check(crm_has_ctl(s, n) == naive);
    int high = 0;
    for (size_t i = 0; i < n; i++)
        high |= (unsigned char)s[i] >= 0x80;
    check(crm_has_non_ascii(s, n) == high);
    /* A long exponent needs a digit before it: text without digits never has one. */
    int digit = 0;
    for (size_t i = 0; i < n; i++)
        digit |= s[i] >= '0' && s[i] <= '9';
    if (!digit)
        check(crm_has_long_exponent(s, n) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    /* Copy so that reads past the end are caught by ASan rather than hidden by the caller. */
    char *s = malloc(size - 1 ? size - 1 : 1);
    check(s != NULL);
    memcpy(s, data + 1, size - 1);
    switch (data[0] % 3) {
    case 0: fuzz_escape(s, size - 1); break;
    case 1: fuzz_headers(s, size - 1); break;
    default: fuzz_ctl(s, size - 1); break;
    }
    free(s);
    return 0;
}
