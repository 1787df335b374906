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

int crm_has_long_exponent(const char *s, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        if ((s[i] != 'e' && s[i] != 'E') || s[i - 1] < '0' || s[i - 1] > '9')
            continue;
        size_t j = i + 1, digits = 0;
        if (j < n && (s[j] == '+' || s[j] == '-'))
            j++;
        while (j < n && s[j] >= '0' && s[j] <= '9') {
            j++;
            digits++;
        }
        if (digits >= 3)
            return 1;
    }
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
