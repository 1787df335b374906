/* Header-block parsing and percent-encoding: the C that touches untrusted bytes. */
#include "wire.h"
#include "jsonplan.h"

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

/* ---- JSON answers ---- */

static int json_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Index just past the string that opens at s[i] ('"'), or n when it never closes (the plan's
 * own skip, src/jsonplan.c). */
static size_t json_skip_string(const char *s, size_t n, size_t i)
{
    return crm_json_skip_string(s, n, i, NULL);
}

/* After the '[' at s[i]: the index of the first byte that is not white space. */
static size_t json_after_ws(const char *s, size_t n, size_t i)
{
    for (i++; i < n && json_ws((unsigned char)s[i]); i++)
        ;
    return i;
}

/* Bytes the scan stops at outside strings: '"', '[', 'n' (null), 'e' and 'E' (exponents), and
 * digits (a long run of them is a number that may not fit a double either). */
static const unsigned char json_stop[256] = {
    ['"'] = 1, ['['] = 1, ['n'] = 1, ['e'] = 1, ['E'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1,
    ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
};

/* A number overflows a double only when its integer digits and its exponent add up past 308.
 * An exponent of 3 or more digits is flagged on its own; with one of at most 2 digits (up to 99)
 * the integer part needs 210 digits or more: a run of this many digits is flagged too. */
#define CRM_JSON_LONG_DIGITS 200
/* Bytes a string ends or escapes at. */
static const unsigned char json_quote[256] = {
    ['"'] = 1, ['\\'] = 1,
};

void crm_json_scan(const char *s, size_t n, crm_json_info *info)
{
    memset(info, 0, sizeof *info);
    const unsigned char *p = (const unsigned char *)s;
    int true_first = 0;
    size_t i = 0;
    while (i < n) {
        while (i < n && !json_stop[p[i]])
            i++;
        if (i >= n)
            break;
        unsigned char c = p[i];
        if (c == '"') {
            i++;
            while (i < n) {
                while (i < n && !json_quote[p[i]])
                    i++;
                if (i >= n || p[i] == '"')
                    break;
                i += 2; /* a backslash and the byte it escapes */
            }
            i++;
        } else if (c == '[') {
            info->arrays++;
            size_t j = json_after_ws(s, n, i);
            if (j < n && s[j] == ']')
                info->empties++;
            else if (n - j >= 4 && memcmp(s + j, "true", 4) == 0)
                true_first = 1;
            i++;
        } else if (c >= '0' && c <= '9') {
            size_t j = i + 1;
            while (j < n && p[j] >= '0' && p[j] <= '9')
                j++;
            if (j - i >= CRM_JSON_LONG_DIGITS)
                info->long_exp = 1;
            i = j;
        } else if (c == 'n') {
            if (n - i >= 4 && memcmp(s + i, "null", 4) == 0)
                info->has_null = 1;
            i++;
        } else {
            i = crm_json_exponent(s, n, i, &info->long_exp); /* e or E outside a string */
        }
    }
    if (info->empties == 0)
        info->mode = CRM_JSON_PLAIN;
    else
        info->mode = true_first ? CRM_JSON_TAG : CRM_JSON_FILL;
}

size_t crm_json_rewrite_size(size_t n, const crm_json_info *info)
{
    /* "[ ]" -> "[true]" adds at most 4 bytes (whitespace is dropped); "[" -> "[false," adds 6. */
    return n + 4 * info->empties + 6 * (info->arrays - info->empties) + 1;
}

size_t crm_json_rewrite(const char *s, size_t n, const crm_json_info *info, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        char c = s[i];
        if (c == '"') {
            size_t j = json_skip_string(s, n, i);
            memcpy(out + o, s + i, j - i);
            o += j - i;
            i = j;
            continue;
        }
        if (c != '[' || info->mode == CRM_JSON_PLAIN) {
            out[o++] = c;
            i++;
            continue;
        }
        size_t j = json_after_ws(s, n, i);
        if (j < n && s[j] == ']') {
            memcpy(out + o, "[true]", 6);
            o += 6;
            i = j + 1;
        } else if (info->mode == CRM_JSON_TAG) {
            memcpy(out + o, "[false,", 7);
            o += 7;
            i++;
        } else {
            out[o++] = '[';
            i++;
        }
    }
    out[o] = '\0';
    return o;
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
