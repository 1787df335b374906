/* Header-block parsing and percent-encoding: the C that touches untrusted bytes. */
#include "wire.h"

#include <string.h>

static int is_unreserved(unsigned char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '.' || ch == '_' || ch == '~';
}

size_t crm_escape(const char *s, size_t n, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (is_unreserved(ch)) {
            out[o++] = (char)ch;
        } else {
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    return o;
}

int crm_has_ctl(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
            return 1;
    return 0;
}

int crm_has_non_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            return 1;
    return 0;
}

size_t crm_parse_headers(const char *data, size_t len, crm_header_fn fn, void *ud)
{
    char name[CRM_HEADER_NAME_MAX + 1];
    const char *p = data, *end = data + len;
    size_t count = 0;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end;
        size_t line_len = (size_t)(line_end - p);
        const char *colon = memchr(p, ':', line_len);
        int status_line = line_len >= 5 && memcmp(p, "HTTP/", 5) == 0;
        if (colon && colon > p && !status_line && (size_t)(colon - p) <= CRM_HEADER_NAME_MAX) {
            size_t nl = (size_t)(colon - p);
            for (size_t i = 0; i < nl; i++) {
                char ch = p[i];
                name[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
            }
            const char *v = colon + 1, *ve = line_end;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            fn(ud, name, nl, v, (size_t)(ve - v));
            count++;
        }
        p = eol ? eol + 1 : end;
    }
    return count;
}

int crm_is_utf8(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            len = 1;
        else if (c == 0xE0)
            len = 2, lo = 0xA0;
        else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF)
            len = 2;
        else if (c == 0xED)
            len = 2, hi = 0x9F;
        else if (c == 0xF0)
            len = 3, lo = 0x90;
        else if (c >= 0xF1 && c <= 0xF3)
            len = 3;
        else if (c == 0xF4)
            len = 3, hi = 0x8F;
        else
            return 0;
        if (n - i - 1 < len)
            return 0;
        for (size_t k = 1; k <= len; k++) {
            unsigned char cc = p[i + k];
            if (k == 1 ? (cc < lo || cc > hi) : (cc < 0x80 || cc > 0xBF))
                return 0;
        }
        i += len + 1;
    }
    return 1;
}

int crm_is_path_id(const char *s, size_t n)
{
    if (n == 0 || n > 128 || (n == 1 && s[0] == '.'))
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 32 || c == 127 || c == ' ' || c == '/' || c == '?' || c == '#' || c == '%' ||
            c == '\\')
            return 0;
        if (c == '.' && i + 1 < n && s[i + 1] == '.')
            return 0;
    }
    return crm_is_utf8(s, n);
}
