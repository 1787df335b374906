/* The operations of both APIs as data, and the request builder that runs them: the path
 * template with its ids checked and percent-encoded, the query string, and what an answer must
 * be (shape, statuses) for the call to count as done. */
#ifndef CRM_OPS_H
#define CRM_OPS_H

#include <stddef.h>
#include "buf.h"
#include "compat.h"

enum { CRM_ID_TOAST = 1, CRM_ID_TABLECHECK = 2 };          /* how path ids are checked */
enum { CRM_SHAPE_ANY = 0, CRM_SHAPE_OBJECT = 1, CRM_SHAPE_ARRAY = 2 };
enum { CRM_OK_2XX = 0, CRM_OK_200 = 1 };                  /* 202 is "still processing" */

typedef struct {
    const char *name;   /* "toast.get_customer" */
    const char *method; /* "GET" */
    const char *path;   /* "/crm/v1/customers/{customerId}": {name} is an id argument */
    int id_kind;        /* CRM_ID_* */
    int shape;          /* CRM_SHAPE_* */
    int ok;             /* CRM_OK_* */
    int fresh;          /* must not run twice: a connection of its own */
} crm_op;

/* The operation at stack index i (its number in core.ops), or NULL. */
const crm_op *crm_op_at(lua_State *L, int i);

/* Appends base + the op's path with the ids at stack indexes a, a+1 + the query string made from
 * the table at index q (or the text at q, or nothing for nil) to url. Returns NULL when done, or
 * the name of the id argument that failed its check (url is then incomplete); "query" when the
 * query cannot be encoded; "memory" when out of memory. */
const char *crm_op_url(lua_State *L, const crm_op *op, const char *base, size_t base_len, int a,
                       int q, struct buf *url);

/* Whether the decoded answer at stack index i fits op->shape (nil always fits). */
int crm_op_shape_ok(lua_State *L, const crm_op *op, int i);
/* Whether status means done for op. */
int crm_op_status_ok(const crm_op *op, long status);

/* Registers core.ops ({name = number}) and core.build into the module table on the stack top. */
void crm_ops_register(lua_State *L);

#endif
