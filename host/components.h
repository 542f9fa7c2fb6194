/* host/components.h: what the host knows about Gradio components: their class names,
 * JSON schemas for /info, input validation (422 details), and the diffs streamed between
 * successive values of a generator's outputs.
 *
 * A component is the JSON object a worker declares: {"type": "slider", "props": {...}}
 * (sandbox/PROTOCOL.md). One table in components.c describes every type.
 */
#ifndef MS_COMPONENTS_H
#define MS_COMPONENTS_H

#include <jansson.h>
#include <stddef.h>

/* Gradio's class name for a type ("textbox" → "Textbox"); the type itself when unknown. */
const char *ms_component_class(const char *type);
/* True for components that the API hides (state). */
int ms_component_skip_api(const json_t *comp);
/* New references: the JSON schema (`type` in /info) and Gradio's python_type object. */
json_t *ms_component_schema(const json_t *comp);
json_t *ms_component_python_type(const json_t *comp);
/* The component's default value (props.value, or the type's empty value); new reference. */
json_t *ms_component_default(const json_t *comp);
/* An example input for /info (props.value or a typical value); new reference. */
json_t *ms_component_example(const json_t *comp);

/* Validates an input value against its component. On success returns 0 and a new
 * reference to the value to pass on in *out (null → the default, ints for integer
 * precision, ...). On failure returns -1 with a message a user can act on in msg. */
int ms_component_validate(const json_t *comp, const json_t *value, json_t **out, char *msg, size_t msglen);

/* Gradio's streaming diff from old to new (sse_v2+): a new JSON array of edits
 * [action, path, value] with actions replace / append / add / delete. */
json_t *ms_value_diff(const json_t *old_value, const json_t *new_value);

#endif
