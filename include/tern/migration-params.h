/* migration-params.h: the one table that describes every migration parameter
 * (QMP name, type, place in struct mig_params, range, help), and the
 * conversions to and from JSON and HMP text built on it. */
#ifndef TERN_MIGRATION_PARAMS_H
#define TERN_MIGRATION_PARAMS_H

#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tern/migration.h"

enum mig_param_type {
    MIG_PARAM_INT,  /* unsigned integer field of 4 or 8 bytes */
    MIG_PARAM_BOOL, /* bool field */
    MIG_PARAM_ENUM, /* uint32_t field holding an index into (values); JSON: a string */
    MIG_PARAM_STR,  /* char[MIG_PARAM_STR_MAX] field; JSON: a string, "" = unset */
};

struct mig_param_desc {
    const char *name; /* QMP name, e.g. "downtime-limit" */
    enum mig_param_type type;
    size_t offset;             /* in struct mig_params */
    size_t size;               /* of the field: 4 or 8 (int), sizeof(bool) */
    uint64_t min, max;         /* inclusive range (int) */
    const char *unit;          /* printed after the value ("ms"); NULL: none */
    bool hmp_mib;              /* HMP text is a size: a bare number means MiB (QEMU) */
    const char *help;          /* one line */
    const char *const *values; /* MIG_PARAM_ENUM: the names, NULL-terminated */
    /* MIG_PARAM_STR: refuses a non-empty value (e.g. no such object); optional. */
    bool (*check_str)(const struct mig_param_desc *d, const char *value, GError **errp);
};

/* The table, in QEMU's print order; (count) gets its length. */
const struct mig_param_desc *mig_params_table(size_t *count);
/* The entry for QMP name (name); NULL if there is none. */
const struct mig_param_desc *mig_param_find(const char *name);

/* Read or write (d)'s field of (p) as a uint64_t (a bool is 0 or 1). Set
 * stores (value) unchecked: validate with mig_param_check() first. */
uint64_t mig_param_get(const struct mig_params *p, const struct mig_param_desc *d);
void mig_param_set(struct mig_params *p, const struct mig_param_desc *d, uint64_t value);
/* MIG_PARAM_STR: (d)'s string in (p); set checks the length and (d)->check_str. */
const char *mig_param_get_str(const struct mig_params *p, const struct mig_param_desc *d);
bool mig_param_set_str(struct mig_params *p, const struct mig_param_desc *d, const char *value,
                       GError **errp);
/* Set (d) in (p) from HMP text (any type: mig_param_parse_text, or the string). */
bool mig_param_apply_text(struct mig_params *p, const struct mig_param_desc *d, const char *text,
                          GError **errp);
/* Whether (value) is within (d)'s range; the error names the parameter. */
bool mig_param_check(const struct mig_param_desc *d, uint64_t value, GError **errp);

/* MIG_PARAM_ENUM: the index of (name) among (d)'s values, or -1. */
int mig_param_enum_lookup(const struct mig_param_desc *d, const char *name);
/* MIG_PARAM_ENUM: the name of (value) ("?" out of range). */
const char *mig_param_enum_name(const struct mig_param_desc *d, uint64_t value);

/* Apply every member of (args) (a migrate-set-parameters request) to (p).
 * All-or-nothing: on any unknown name, wrong type or out-of-range value,
 * (p) is unchanged and (errp) names the first offending parameter. */
bool mig_params_apply_json(struct mig_params *p, JsonObject *args, GError **errp);
/* Every parameter of (p) as a query-migrate-parameters object. */
JsonObject *mig_params_to_json(const struct mig_params *p);

/* Convert HMP text (text) for parameter (d) into (out) (range-checked):
 * on/off/true/false/yes/no for a bool; an integer, or a size with a K/M/G/T
 * suffix where (d)->hmp_mib (a bare number is MiB there, as in QEMU). */
bool mig_param_parse_text(const struct mig_param_desc *d, const char *text, uint64_t *out,
                          GError **errp);
/* Append "name: value[ unit]\n" for (d) with (value) to (out); a bool prints on/off. */
void mig_param_format(GString *out, const struct mig_param_desc *d, uint64_t value);
/* The same for a MIG_PARAM_STR parameter (QEMU prints a string parameter as it is). */
void mig_param_format_str(GString *out, const struct mig_param_desc *d, const char *value);

/* Capabilities (migrate-set-capabilities): boolean fields of struct mig_params
 * described like parameters, kept apart as QEMU keeps them apart. */
const struct mig_param_desc *mig_caps_table(size_t *count);
const struct mig_param_desc *mig_cap_find(const char *name);
/* Apply a migrate-set-capabilities list; all-or-nothing like the parameters. */
bool mig_caps_apply_json(struct mig_params *p, JsonArray *caps, GError **errp);
/* [{"capability": NAME, "state": BOOL}, ...] for query-migrate-capabilities. */
JsonArray *mig_caps_to_json(const struct mig_params *p);

#endif
