/* The plan of a JSON text (see jsonplan.h): one pass over the bytes that keeps a stack of the
 * open containers and records, in document order, every array and object with where it sits
 * (its parent's key or its index) and every object member whose value is null. Strings are
 * skipped with memchr. Malformed text is read as far as it goes; lua-cjson then refuses it, and
 * json.c checks every step of the plan against the decoded value anyway. */
#include <stdlib.h>
#include <string.h>

#include "jsonplan.h"

#define PLAN_DEPTH 1000 /* lua-cjson's decode depth */
/* A number overflows a double when its digits and exponent reach past 308: an exponent of 3 or
 * more digits, or a run of 200 digits or more (with an exponent of at most 99). */
#define PLAN_LONG_DIGITS 200

typedef struct {
    uint32_t event;      /* this container's event */
    uint32_t elems;      /* arrays: elements begun so far */
    uint32_t key_off;    /* objects: the key of the member being read */
    uint32_t key_len;
    uint8_t is_object;
    uint8_t want_key;    /* objects: the next string is a key */
    uint8_t pending;     /* arrays: no element begun yet */
} frame;

/* Index just past the string that opens at s[i] ('"'), or n when it never closes. With
 * `escaped`, *escaped says whether the string holds a backslash (keys only: values need not). */
size_t crm_json_skip_string(const char *s, size_t n, size_t i, int *escaped)
{
    size_t j = i + 1;
    while (j < n) {
        const char *q = memchr(s + j, '"', n - j);
        if (q == NULL)
            return n;
        size_t k = (size_t)(q - s), b = k;
        while (b > i + 1 && s[b - 1] == '\\')
            b--;
        if (((k - b) & 1) == 0) {
            if (escaped)
                *escaped = memchr(s + i + 1, '\\', k - i - 1) != NULL;
            return k + 1;
        }
        j = k + 1;
    }
    if (escaped)
        *escaped = 1;
    return n;
}

size_t crm_json_exponent(const char *s, size_t n, size_t i, int *long_num)
{
    /* an exponent when a digit or a point comes before it: lua-cjson reads numbers with strtod,
     * which takes "1.e400" too */
    if (i == 0 || !((s[i - 1] >= '0' && s[i - 1] <= '9') || s[i - 1] == '.'))
        return i + 1;
    size_t j = i + 1, digits = 0;
    if (j < n && (s[j] == '+' || s[j] == '-'))
        j++;
    while (j < n && s[j] >= '0' && s[j] <= '9') {
        j++;
        digits++;
    }
    if (digits >= 3)
        *long_num = 1;
    return j;
}

/* s[i] is a digit outside a string: the index past its run of digits; *long_num is set when the
 * run has PLAN_LONG_DIGITS digits or more. */
static size_t digit_run(const char *s, size_t n, size_t i, int *long_num)
{
    size_t j = i + 1;
    while (j < n && s[j] >= '0' && s[j] <= '9')
        j++;
    if (j - i >= PLAN_LONG_DIGITS)
        *long_num = 1;
    return j;
}

static crm_plan_event *add_event(crm_plan *p)
{
    if (p->n == p->cap) {
        size_t cap = p->cap * 2;
        crm_plan_event *ev = malloc(cap * sizeof *ev);
        if (ev == NULL)
            return NULL;
        memcpy(ev, p->ev, p->n * sizeof *ev);
        if (p->ev != p->small)
            free(p->ev);
        p->ev = ev;
        p->cap = cap;
    }
    crm_plan_event *e = &p->ev[p->n++];
    memset(e, 0, sizeof *e);
    return e;
}

void crm_plan_free(crm_plan *p)
{
    if (p->ev != NULL && p->ev != p->small)
        free(p->ev);
    p->ev = NULL;
    p->n = p->cap = 0;
}

/* A value begins in the container on top: arrays count their elements. */
static void value_begins(frame *top)
{
    if (top != NULL && !top->is_object && top->pending) {
        top->pending = 0;
        top->elems = 1;
    }
}

int crm_plan_scan(const char *s, size_t n, crm_plan *p)
{
    /* The header only: the event buffer is written as it fills. */
    p->n = 0;
    p->long_num = 0;
    p->ev = p->small;
    p->cap = sizeof p->small / sizeof p->small[0];
    p->simple = 1;
    if (n > UINT32_MAX) {
        p->simple = 0;
        return 0;
    }
    frame stack_small[32];
    frame *stack = stack_small;
    size_t depth = 0, stack_cap = 32;
    int rc = 0;
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        frame *top = depth ? &stack[depth - 1] : NULL;
        switch (c) {
        case '"': {
            int escaped = 0;
            int key = top && top->is_object && top->want_key;
            size_t j = crm_json_skip_string(s, n, i, key ? &escaped : NULL);
            if (key) {
                top->want_key = 0;
                top->key_off = (uint32_t)(i + 1);
                top->key_len = (uint32_t)(j > i + 1 ? j - i - 2 : 0);
                if (escaped || j >= n)
                    p->simple = 0; /* the key is not its own text: json.c could not look it up */
            } else {
                value_begins(top);
            }
            i = j;
            continue;
        }
        case '{':
        case '[': {
            value_begins(top);
            if (depth >= PLAN_DEPTH) {
                p->simple = 0;
                goto done;
            }
            crm_plan_event *e = add_event(p);
            if (e == NULL) {
                rc = -1;
                p->simple = 0;
                goto done;
            }
            top = depth ? &stack[depth - 1] : NULL; /* add_event does not move the stack */
            e->kind = c == '{' ? CRM_PLAN_OBJECT : CRM_PLAN_ARRAY;
            if (top && top->is_object) {
                e->in_object = 1;
                e->key_off = top->key_off;
                e->key_len = top->key_len;
            } else if (top) {
                e->index = top->elems;
            }
            if (depth == stack_cap) {
                frame *ns = malloc(2 * stack_cap * sizeof *ns);
                if (ns == NULL) {
                    rc = -1;
                    p->simple = 0;
                    goto done;
                }
                memcpy(ns, stack, depth * sizeof *ns);
                if (stack != stack_small)
                    free(stack);
                stack = ns;
                stack_cap *= 2;
            }
            frame *f = &stack[depth++];
            memset(f, 0, sizeof *f);
            f->event = (uint32_t)(p->n - 1);
            f->is_object = c == '{';
            f->want_key = c == '{';
            f->pending = c == '[';
            i++;
            continue;
        }
        case '}':
        case ']':
            if (top == NULL || top->is_object != (c == '}')) {
                p->simple = 0; /* unbalanced: cjson refuses it, or the plan would be wrong */
                goto done;
            }
            p->ev[top->event].end = (uint32_t)p->n;
            p->ev[top->event].count = top->is_object ? 0 : top->elems;
            depth--;
            i++;
            continue;
        case ',':
            if (top && top->is_object)
                top->want_key = 1;
            else if (top)
                top->elems++;
            i++;
            continue;
        case 'n':
            value_begins(top);
            if (top && top->is_object && n - i >= 4 && memcmp(s + i, "null", 4) == 0) {
                crm_plan_event *e = add_event(p);
                if (e == NULL) {
                    rc = -1;
                    p->simple = 0;
                    goto done;
                }
                e->kind = CRM_PLAN_NULL;
                e->in_object = 1;
                e->key_off = top->key_off;
                e->key_len = top->key_len;
                e->end = (uint32_t)p->n;
            }
            i++;
            continue;
        case 'e':
        case 'E':
            i = crm_json_exponent(s, n, i, &p->long_num);
            continue;
        default:
            if (c >= '0' && c <= '9') {
                value_begins(top);
                i = digit_run(s, n, i, &p->long_num);
                continue;
            }
            if (c == '-' || c == 't' || c == 'f')
                value_begins(top);
            i++;
            continue;
        }
    }
    if (depth != 0)
        p->simple = 0;
done:
    if (stack != stack_small)
        free(stack);
    return rc;
}

/* A flat object: the text starts (after white space) with '{', holds no other '{' or '[' and no
 * `null` anywhere (inside strings too: the test is conservative), and no number that may not fit
 * a double. Such a text decodes to a table that needs nothing more. One pass, a byte class
 * table: 1 for brackets, 2 for 'n', 3 for digits. */
static const unsigned char flat_class[256] = {
    ['{'] = 1, ['['] = 1, ['n'] = 2,
    ['0'] = 3, ['1'] = 3, ['2'] = 3, ['3'] = 3, ['4'] = 3,
    ['5'] = 3, ['6'] = 3, ['7'] = 3, ['8'] = 3, ['9'] = 3,
};

int crm_plan_flat(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t k = 0;
    while (k < n && (u[k] == ' ' || u[k] == '\t' || u[k] == '\n' || u[k] == '\r'))
        k++;
    if (k >= n || u[k] != '{')
        return 0;
    for (k++; k < n;) {
        unsigned char c = flat_class[u[k]];
        if (c == 0) {
            k++;
            continue;
        }
        if (c == 1)
            return 0;
        if (c == 2) {
            if (n - k >= 4 && memcmp(s + k, "null", 4) == 0)
                return 0;
            k++;
            continue;
        }
        /* A run of digits: an exponent when e or E (and maybe a sign) comes before it, after a
         * digit or a point, and it has 3 digits or more; too long by itself at
         * PLAN_LONG_DIGITS. Text that only looks like that (in a string) goes to the full plan. */
        size_t start = k;
        while (k < n && flat_class[u[k]] == 3)
            k++;
        size_t run = k - start;
        if (run >= PLAN_LONG_DIGITS)
            return 0;
        if (run >= 3 && start >= 2) {
            size_t e = start - 1;
            if ((u[e] == '+' || u[e] == '-') && e >= 2)
                e--;
            if ((u[e] == 'e' || u[e] == 'E') && ((u[e - 1] >= '0' && u[e - 1] <= '9') || u[e - 1] == '.'))
                return 0;
        }
    }
    return 1;
}

/* ---- the scan and rewrite crm decoded with before src/jdec.c (they were in src/wire.c):
 * kept as the fuzzer's reference for the plan ---- */

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
            i = digit_run(s, n, i, &info->long_exp);
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

