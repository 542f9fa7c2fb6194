/* tests/unit/test_jinja.c: the Jinja interpreter (runtime/jinja.h) against the real chat
 * templates in fixtures/chat-templates, the language features chat templates use, hostile
 * templates, and the `moonspace chat-template` CLI. */
#include "tests/testlib.h"

#include <jansson.h>

#include "common/ms.h"
#include "runtime/jinja.h"

TEST_SUITE("jinja")

static char last_err[512];
static int last_rc;

/* Renders tmpl with a context given as JSON text (NULL for none); returns the output
 * (static until the next call) or NULL with last_rc / last_err set. */
static const char *render_opts(const char *tmpl, const char *ctx_json, const ms_jinja_opts *o) {
	static char *prev;
	free(prev);
	prev = NULL;
	json_t *ctx = NULL;
	if (ctx_json) {
		json_error_t je;
		ctx = json_loads(ctx_json, 0, &je);
		if (!ctx) TEST_FAILF("bad test JSON: %s", je.text);
	}
	last_err[0] = 0;
	last_rc = ms_jinja_render(tmpl, ctx, o, &prev, last_err, sizeof last_err);
	json_decref(ctx);
	return last_rc ? NULL : prev;
}
static const char *render(const char *tmpl, const char *ctx_json) { return render_opts(tmpl, ctx_json, NULL); }

#define CHECK_RENDER(tmpl, ctx, want)                                                      \
	do {                                                                               \
		const char *got_ = render(tmpl, ctx);                                      \
		CHECK_MSG(got_ != NULL, "%.200s: error %d: %.300s", tmpl, last_rc, last_err);      \
		CHECK_STR(got_, want);                                                     \
	} while (0)
#define CHECK_FAILS(tmpl, ctx, code)                                                       \
	do {                                                                               \
		const char *got_ = render(tmpl, ctx);                                      \
		CHECK_MSG(got_ == NULL, "%s: rendered \"%s\", expected an error", tmpl, got_); \
		CHECK_INT(last_rc, code);                                                  \
		CHECK(last_err[0] != 0);                                                   \
	} while (0)

/* ---------------------------------------------------------------- fixtures */

static int run_fixture(const char *file, int *ncases) {
	char rel[256];
	snprintf(rel, sizeof rel, "chat-templates/%s", file);
	json_error_t je;
	json_t *d = json_load_file(fixture_path(rel), 0, &je);
	CHECK_MSG(d != NULL, "%s: %s", rel, je.text);
	const char *tmpl = json_string_value(json_object_get(d, "template"));
	CHECK(tmpl != NULL);
	json_t *cases = json_object_get(d, "cases");
	CHECK(json_array_size(cases) > 0);
	size_t i;
	json_t *c;
	json_array_foreach(cases, i, c) {
		const char *bos = json_string_value(json_object_get(c, "bos_token"));
		const char *eos = json_string_value(json_object_get(c, "eos_token"));
		int agp = json_is_true(json_object_get(c, "add_generation_prompt"));
		const char *want = json_string_value(json_object_get(c, "expected"));
		const char *want_err = json_string_value(json_object_get(c, "expected_error"));
		char *out = NULL, err[512] = "";
		int rc = ms_chat_template_render(tmpl, json_object_get(c, "messages"), bos, eos, agp, NULL, &out, err, sizeof err);
		const char *conv = json_string_value(json_object_get(c, "conversation"));
		if (want_err) {
			CHECK_MSG(rc == MS_EINVAL, "%s case %zu (%s): rc %d (%s), expected raise_exception", file, i, conv, rc, rc ? err : out);
			CHECK_STR(err, want_err);
		} else {
			CHECK_MSG(rc == 0, "%s case %zu (%s, agp %d): error %d: %s", file, i, conv, agp, rc, err);
			CHECK_MSG(want && !strcmp(out, want), "%s case %zu (%s, agp %d): got \"%s\", expected \"%s\"", file, i, conv, agp, out, want);
		}
		free(out);
		(*ncases)++;
	}
	json_decref(d);
	return 0;
}

TEST(fixture_llama2_chat) { int n = 0; run_fixture("llama-2-chat.json", &n); CHECK(n >= 6); }
TEST(fixture_llama3_instruct) { int n = 0; run_fixture("llama-3-instruct.json", &n); CHECK(n >= 6); }
TEST(fixture_mistral_instruct) { int n = 0; run_fixture("mistral-7b-instruct-v0.1.json", &n); CHECK(n >= 6); }
TEST(fixture_qwen2_chatml) { int n = 0; run_fixture("qwen2-chatml.json", &n); CHECK(n >= 6); }
TEST(fixture_zephyr) { int n = 0; run_fixture("zephyr.json", &n); CHECK(n >= 6); }

/* every fixture file present, so a newly added template cannot be silently skipped */
TEST(fixture_all_files) {
	const char *dir = fixture_path("chat-templates");
	char cmd[4200];
	snprintf(cmd, sizeof cmd, "ls '%s'", dir);
	FILE *p = popen(cmd, "r");
	CHECK(p != NULL);
	char name[256];
	int files = 0, n = 0;
	while (fgets(name, sizeof name, p)) {
		name[strcspn(name, "\n")] = 0;
		size_t l = strlen(name);
		if (l < 5 || strcmp(name + l - 5, ".json")) continue;
		run_fixture(name, &n);
		files++;
	}
	pclose(p);
	CHECK(files >= 5);
	CHECK(n >= 30);
}

/* ---------------------------------------------------------------- language */

TEST(text_and_output) {
	CHECK_RENDER("hello", NULL, "hello");
	CHECK_RENDER("", NULL, "");
	CHECK_RENDER("{{ 'a' }}{{ \"b\" }}{{ 1 }}{{ 2.5 }}{{ true }}{{ none }}", NULL, "ab12.5TrueNone");
	CHECK_RENDER("{{ x }}", "{\"x\": \"v\"}", "v");
	CHECK_RENDER("{{ 1.0 }} {{ 0.1 + 0.2 }} {{ 10 / 4 }} {{ 3 / 3 }}", NULL, "1.0 0.30000000000000004 2.5 1.0");
	/* Python's float repr: fixed notation for exponents -4..15 */
	CHECK_RENDER("{{ 1e3 }} {{ 1.5e-7 }} {{ 0.0001 }} {{ 1e16 }} {{ 123456789012345678.0 }} {{ -2.5 }}", NULL,
	             "1000.0 1.5e-07 0.0001 1e+16 1.2345678901234568e+17 -2.5");
	CHECK_RENDER("{{ (1, 2) }} {{ (1,) }} {{ () }}", NULL, "(1, 2) (1,) ()");
	CHECK_RENDER("{# a comment #}x{# another\nline #}", NULL, "x");
	CHECK_RENDER("{{ [1, 'a', none] }} {{ {'k': 'v'} }}", NULL, "[1, 'a', None] {'k': 'v'}");
}

TEST(string_escapes) {
	CHECK_RENDER("{{ 'a\\nb\\t\\'c\\'\\\\' }}", NULL, "a\nb\t'c'\\");
	CHECK_RENDER("{{ \"q\\\"q\" }}", NULL, "q\"q");
	CHECK_RENDER("{{ '\\u00e9\\x41' }}", NULL, "\xc3\xa9" "A");
	CHECK_RENDER("{{ 'a' 'b' }}", NULL, "ab");
	CHECK_RENDER("{{ '}}' }}{{ '%}' }}", NULL, "}}%}");
}

TEST(arithmetic) {
	CHECK_RENDER("{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 2 * 3 + 1 }} {{ 2 * (3 + 1) }}", NULL,
	             "3 -4 1 2 1024 7 8");
	CHECK_RENDER("{{ 1 + 2.5 }} {{ -x }} {{ 10 - 2 - 3 }}", "{\"x\": 4}", "3.5 -4 5");
	CHECK_RENDER("{{ 'ab' * 3 }} {{ [1] * 2 }} {{ 'x' * true }}", NULL, "ababab [1, 1] x");
	CHECK_RENDER("{{ '%s has %d items (%r)' % ('list', 3, 'q') }} {{ '%s%%' % 50 }}", NULL, "list has 3 items ('q') 50%");
	CHECK_RENDER("{{ true is number }} {{ true is integer }} {{ 3.0 is odd }} {{ -3 is odd }}", NULL, "True False True True");
	CHECK_RENDER("{{ [1] + [2] }}", NULL, "[1, 2]");
	CHECK_FAILS("{{ 1 // 0 }}", NULL, MS_EFORMAT);
	CHECK_FAILS("{{ 1 % 0 }}", NULL, MS_EFORMAT);
	CHECK_FAILS("{{ 9223372036854775807 + 1 }}", NULL, MS_EFORMAT);
	CHECK_FAILS("{{ 'a' + 1 }}", NULL, MS_EFORMAT);
}

TEST(concat_and_logic) {
	CHECK_RENDER("{{ 'a' + 'b' ~ 1 ~ none }}", NULL, "ab1None");
	CHECK_RENDER("{{ 'x' ~ undefined_thing ~ 'y' }}", NULL, "xy");
	CHECK_RENDER("{{ 1 and 2 }} {{ 0 or 'z' }} {{ not 0 }} {{ not 1 == 2 }}", NULL, "2 z True True");
	CHECK_RENDER("{{ 'b' in 'abc' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 3 not in [1] }}", NULL, "True True True True");
	CHECK_RENDER("{{ 1 < 2 }} {{ 'a' < 'b' }} {{ 2 >= 2.0 }} {{ 1 == 1.0 }} {{ 'a' != 'a' }}", NULL, "True True True True False");
	CHECK_RENDER("{{ 'yes' if x else 'no' }} {{ 'yes' if y else 'no' }} [{{ 'a' if false }}]", "{\"x\": 1}", "yes no []");
	CHECK_FAILS("{{ 1 < 'a' }}", NULL, MS_EFORMAT);
}

TEST(if_elif_else) {
	const char *t = "{% if x == 1 %}one{% elif x == 2 %}two{% elif x == 3 %}three{% else %}many{% endif %}";
	CHECK_RENDER(t, "{\"x\": 1}", "one");
	CHECK_RENDER(t, "{\"x\": 2}", "two");
	CHECK_RENDER(t, "{\"x\": 3}", "three");
	CHECK_RENDER(t, "{\"x\": 9}", "many");
	CHECK_RENDER("{% if a %}{% if b %}ab{% else %}a{% endif %}{% endif %}", "{\"a\": true, \"b\": false}", "a");
}

TEST(for_loop_variables) {
	CHECK_RENDER("{% for x in xs %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}"
	             "{{ loop.first }}{{ loop.last }}{{ loop.length }}|{% endfor %}",
	             "{\"xs\": [\"a\", \"b\"]}", "1021TrueFalse2|2110FalseTrue2|");
	CHECK_RENDER("{% for x in [] %}x{% else %}empty{% endfor %}", NULL, "empty");
	CHECK_RENDER("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", "{\"d\": {\"a\": 1, \"b\": 2}}", "a=1;b=2;");
	CHECK_RENDER("{% for k in d %}{{ k }}{% endfor %}", "{\"d\": {\"a\": 1, \"b\": 2}}", "ab");
	CHECK_RENDER("{% for c in 'héj' %}[{{ c }}]{% endfor %}", NULL, "[h][\xc3\xa9][j]");
	CHECK_RENDER("{% for i in range(5) if i is odd %}{{ i }}{{ loop.length }} {% endfor %}", NULL, "12 32 ");
	CHECK_RENDER("{% for i in range(2, 8, 3) %}{{ i }}{% endfor %}{% for i in range(3, 0, -1) %}{{ i }}{% endfor %}", NULL, "25321");
	CHECK_RENDER("{% for a in [1,2] %}{% for b in [3,4] %}{{ loop.index }}{% endfor %}{{ loop.index }}{% endfor %}", NULL, "121122");
	CHECK_RENDER("{% for x in missing %}x{% endfor %}ok", NULL, "ok");
	CHECK_RENDER("{% for x in [1, 2, 3] %}{{ loop.cycle('a', 'b') }}{{ loop.previtem is defined }}{% endfor %}", NULL, "aFalsebTrueaTrue");
}

/* loop.* is computed per access: a long loop stays far below the memory limit */
TEST(long_loop_within_limits) {
	ms_jinja_opts o;
	ms_jinja_opts_default(&o);
	o.max_memory = 48u << 20; /* ~700 bytes an iteration would need 140 MiB */
	const char *r = render_opts("{% for i in range(200000) %}{% set x = loop.index %}{% if loop.last %}{{ x }} {{ loop['length'] }}{% endif %}{% endfor %}", NULL, &o);
	CHECK_MSG(r != NULL, "%d %s", last_rc, last_err);
	CHECK_STR(r, "200000 200000");
}

TEST(loop_controls) {
	CHECK_RENDER("{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %}",
	             NULL, "0134");
}

TEST(set_scoping_and_namespace) {
	CHECK_RENDER("{% set x = 1 %}{% for i in [1,2] %}{% set x = i %}{% endfor %}{{ x }}", NULL, "1");
	CHECK_RENDER("{% set ns = namespace(found=false, n=0) %}{% for i in [1,2,3] %}{% set ns.n = ns.n + i %}"
	             "{% if i == 2 %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.found }} {{ ns.n }}",
	             NULL, "True 6");
	CHECK_RENDER("{% set a, b = [1, 2] %}{{ b }}{{ a }}", NULL, "21");
	CHECK_RENDER("{% set s %}in {{ 'block' }}{% endset %}[{{ s }}]", NULL, "[in block]");
	CHECK_RENDER("{% set s | upper %}shout{% endset %}{{ s }}", NULL, "SHOUT");
	CHECK_FAILS("{% set x.y = 1 %}", "{\"x\": {}}", MS_EFORMAT);
}

TEST(whitespace_control) {
	CHECK_RENDER("a  {{- 'b' -}}  c", NULL, "abc");
	CHECK_RENDER("a \n {%- if true -%} \n b \n {%- endif -%} \n c", NULL, "abc");
	CHECK_RENDER("a {#- c -#} b", NULL, "ab");
	/* trim_blocks: the newline after a block tag goes; lstrip_blocks: indentation before it */
	CHECK_RENDER("{% if true %}\n  x\n{% endif %}\n", NULL, "  x\n");
	CHECK_RENDER("<ul>\n    {% for i in [1,2] %}\n    <li>{{ i }}</li>\n    {% endfor %}\n</ul>", NULL,
	             "<ul>\n    <li>1</li>\n    <li>2</li>\n</ul>");
	/* lstrip only at line start; {%+ disables it; expressions keep their newline */
	CHECK_RENDER("x  {% if true %}y{% endif %}", NULL, "x  y");
	CHECK_RENDER("  {%+ if true %}y{% endif %}", NULL, "  y");
	CHECK_RENDER("{{ 'a' }}\nb", NULL, "a\nb");
	CHECK_RENDER("{% if true +%}\nx{% endif %}", NULL, "\nx");
	ms_jinja_opts o;
	ms_jinja_opts_default(&o);
	o.trim_blocks = o.lstrip_blocks = 0;
	const char *r = render_opts("  {% if true %}\nx{% endif %}\n", NULL, &o);
	CHECK(r != NULL);
	CHECK_STR(r, "  \nx");
	CHECK_RENDER("{% raw %}{{ not evaluated }}{% endraw %}", NULL, "{{ not evaluated }}");
	/* like Jinja: one trailing newline of the source is dropped, and \r\n becomes \n */
	CHECK_RENDER("a\n", NULL, "a");
	CHECK_RENDER("a\n\n", NULL, "a\n");
	CHECK_RENDER("a\r\nb\r\n{% if true %}\r\nc\r\n{% endif %}\r\n", NULL, "a\nb\nc\n");
}

TEST(undefined) {
	CHECK_RENDER("[{{ nope }}][{{ nope.attr }}][{{ nope['k'] }}][{{ nope.a.b }}]", NULL, "[][][][]");
	CHECK_RENDER("{{ nope is defined }} {{ nope is undefined }} {{ x is defined }}", "{\"x\": null}", "False True True");
	CHECK_RENDER("{% if nope %}t{% else %}f{% endif %}{% if not nope %}!{% endif %}", NULL, "f!");
	CHECK_RENDER("{{ d.missing }}|{{ l[10] }}|{{ nope | default('dflt') }}|{{ '' | default('x', true) }}",
	             "{\"d\": {}, \"l\": [1]}", "||dflt|x");
	CHECK_RENDER("{{ nope | length }}", NULL, "0");
	CHECK_FAILS("{{ nope + 'x' }}", NULL, MS_EFORMAT);
	CHECK_FAILS("{{ nope() }}", NULL, MS_EFORMAT);
}

TEST(tests) {
	CHECK_RENDER("{{ none is none }}{{ 's' is string }}{{ 1 is number }}{{ 1.5 is number }}{{ 's' is number }}", NULL,
	             "TrueTrueTrueTrueFalse");
	CHECK_RENDER("{{ {} is mapping }}{{ [] is mapping }}{{ [] is iterable }}{{ 's' is sequence }}{{ 1 is iterable }}", NULL,
	             "TrueFalseTrueTrueFalse");
	CHECK_RENDER("{{ true is true }}{{ 1 is true }}{{ false is false }}{{ 3 is odd }}{{ 4 is even }}{{ 3 is not odd }}", NULL,
	             "TrueFalseTrueTrueTrueFalse");
	CHECK_RENDER("{{ 6 is divisibleby(3) }}{{ 'a' is eq('a') }}{{ x is sameas none }}", "{\"x\": null}", "TrueTrueTrue");
	CHECK_FAILS("{{ 1 is frobnicated }}", NULL, MS_EFORMAT);
}

TEST(access_and_slicing) {
	const char *ctx = "{\"m\": {\"role\": \"user\", \"content\": \"hi\"}, \"l\": [10, 20, 30, 40], \"s\": \"h\u00e9llo\"}";
	CHECK_RENDER("{{ m.role }} {{ m['content'] }} {{ l[0] }} {{ l[-1] }} {{ l[-4] }}", ctx, "user hi 10 40 10");
	CHECK_RENDER("{{ l[1:] }} {{ l[:2] }} {{ l[::-1] }} {{ l[-2:] }} {{ l[1:3] }} {{ l[::2] }} {{ l[10:] }}", ctx,
	             "[20, 30, 40] [10, 20] [40, 30, 20, 10] [30, 40] [20, 30] [10, 30] []");
	CHECK_RENDER("{{ s[1] }} {{ s[-1] }} {{ s[1:3] }} {{ s[::-1] }} {{ s | length }}", ctx, "\xc3\xa9 o \xc3\xa9l oll\xc3\xa9h 5");
	CHECK_RENDER("{{ l | first }} {{ l | last }} {{ l | length }} {{ l | count }}", ctx, "10 40 4 4");
	CHECK_RENDER("{{ [[1, 2], [3]][0][1] }} {{ {'a': {'b': 'c'}}.a.b }}", NULL, "2 c");
}

TEST(filters) {
	CHECK_RENDER("[{{ '  a b \\n' | trim }}] {{ 'ab' | upper }} {{ 'AB' | lower }} {{ 'hello world' | title }} {{ 'hELLO' | capitalize }}",
	             NULL, "[a b] AB ab Hello World Hello");
	CHECK_RENDER("{{ 'aXbX' | replace('X', '-') }} {{ ['a', 'b'] | join(', ') }} {{ [1, 2] | join }}", NULL, "a-b- a, b 12");
	CHECK_RENDER("{{ 42 | string }}{{ '7' | int + 1 }}{{ 'x' | int }}{{ 3.9 | int }}", NULL, "42803");
	CHECK_RENDER("{{ 'ab' | list }} {{ {'b': 1, 'a': 2} | items | list }} {{ {'b': 1, 'A': 2} | dictsort }}", NULL,
	             "['a', 'b'] [('b', 1), ('a', 2)] [('A', 2), ('b', 1)]");
	CHECK_RENDER("{{ ms | selectattr('role', 'equalto', 'user') | map(attribute='content') | join(',') }}",
	             "{\"ms\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"bot\", \"content\": \"b\"}, {\"role\": \"user\", \"content\": \"c\"}]}",
	             "a,c");
	CHECK_RENDER("{{ ms | rejectattr('tool') | list | length }} {{ (ms | selectattr('tool') | first).missing }}",
	             "{\"ms\": [{\"tool\": true}, {}, {}]}", "2 ");
	CHECK_RENDER("{{ ['a', 'b'] | map('upper') | join }} {{ [3, 1, 2] | sort }} {{ [1, 2] | reverse | list }}", NULL, "AB [1, 2, 3] [2, 1]");
	CHECK_FAILS("{{ 1 | no_such_filter }}", NULL, MS_EFORMAT);
	/* Jinja's title filter differs from str.title(): words start only after - ( { [ < or space */
	CHECK_RENDER("{{ \"it's x-ray [ok]\" | title }} {{ \"it's\".title() }}", NULL, "It's X-Ray [Ok] It'S");
}

TEST(tojson) {
	CHECK_RENDER("{{ x | tojson }}", "{\"x\": {\"name\": \"f\", \"args\": [1, 2.5, true, null, \"q\\\"\\n\u00e9\"]}}",
	             "{\"name\": \"f\", \"args\": [1, 2.5, true, null, \"q\\\"\\n\xc3\xa9\"]}");
	CHECK_RENDER("{{ x | tojson(indent=2) }}", "{\"x\": {\"a\": [1, {}], \"b\": []}}",
	             "{\n  \"a\": [\n    1,\n    {}\n  ],\n  \"b\": []\n}");
	CHECK_RENDER("{{ 'a' | tojson }} {{ 1.0 | tojson }}", NULL, "\"a\" 1.0");
}

TEST(methods) {
	CHECK_RENDER("[{{ '  x  '.strip() }}][{{ '  x  '.lstrip() }}][{{ '  x  '.rstrip() }}][{{ 'xxaxx'.strip('x') }}]", NULL,
	             "[x][x  ][  x][a]");
	CHECK_RENDER("{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith('bc') }}{{ 'abc'.startswith('c') }}{{ 'abc'.startswith(['x', 'a']) }}", NULL,
	             "TrueTrueFalseTrue");
	CHECK_RENDER("{{ 'a b  c'.split() }} {{ 'a,b,,c'.split(',') }} {{ 'a,b,c'.split(',', 1) }}", NULL,
	             "['a', 'b', 'c'] ['a', 'b', '', 'c'] ['a', 'b,c']");
	CHECK_RENDER("{{ 'Ab'.upper() }}{{ 'Ab'.lower() }}{{ 'ab cd'.title() }}{{ 'aXa'.replace('a', 'b') }}", NULL, "ABabAb CdbXb");
	CHECK_RENDER("{{ d.keys() | list }} {{ d.values() | list }} {{ d.get('a') }} {{ d.get('z') }} {{ d.get('z', 5) }} {{ d.items() | list }}",
	             "{\"d\": {\"a\": 1}}", "['a'] [1] 1 None 5 [('a', 1)]");
	CHECK_RENDER("{% set l = [] %}{% set _ = l.append(1) %}{{ l }}", NULL, "[1]");
	CHECK_RENDER("{{ '-'.join(['a', 'b']) }}", NULL, "a-b");
	CHECK_FAILS("{{ 'a'.frobnicate() }}", NULL, MS_EFORMAT);
}

TEST(macros) {
	CHECK_RENDER("{% macro greet(name, punct='!') %}hi {{ name }}{{ punct }}{% endmacro %}{{ greet('bob') }} {{ greet('al', punct='?') }}",
	             NULL, "hi bob! hi al?");
}

TEST(raise_exception_message) {
	const char *r = render("a{{ raise_exception('Only user and assistant roles are supported!') }}b", NULL);
	CHECK(r == NULL);
	CHECK_INT(last_rc, MS_EINVAL);
	CHECK_STR(last_err, "Only user and assistant roles are supported!");
}

TEST(syntax_errors_have_lines) {
	CHECK_FAILS("line1\n{% if x %}\nno end", NULL, MS_EFORMAT);
	CHECK(strstr(last_err, "line") != NULL);
	CHECK_FAILS("{{ 'unterminated }}", NULL, MS_EFORMAT);
	CHECK_FAILS("a\nb\n{{ 1 + }}", NULL, MS_EFORMAT);
	CHECK_MSG(strstr(last_err, "line 3") != NULL, "err: %s", last_err);
	CHECK_FAILS("{% endfor %}", NULL, MS_EFORMAT);
	CHECK_FAILS("{% frobnicate %}", NULL, MS_EFORMAT);
	CHECK_FAILS("{{ x", NULL, MS_EFORMAT);
	CHECK_FAILS("{# open comment", NULL, MS_EFORMAT);
	CHECK_FAILS("{% for %}{% endfor %}", NULL, MS_EFORMAT);
}

TEST(chat_api_variables) {
	json_t *msgs = json_loads("[{\"role\": \"user\", \"content\": \"hi\"}]", 0, NULL);
	json_t *extra = json_loads("{\"tools\": [{\"name\": \"calc\"}]}", 0, NULL);
	char *out = NULL, err[256];
	int rc = ms_chat_template_render("{{ bos_token }}|{{ eos_token is defined }}|{{ add_generation_prompt }}|{{ messages[0].content }}|{{ tools[0].name }}",
	                                 msgs, "<s>", NULL, 1, extra, &out, err, sizeof err);
	CHECK_MSG(rc == 0, "%s", err);
	CHECK_STR(out, "<s>|False|True|hi|calc");
	free(out);
	json_t *cfg = json_loads("{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"}, {\"name\": \"default\", \"template\": \"D\"}],"
	                         " \"bos_token\": {\"content\": \"<b>\", \"lstrip\": false}, \"eos_token\": \"</e>\"}", 0, NULL);
	const char *t, *bos, *eos;
	CHECK_INT(ms_chat_template_from_config(cfg, &t, &bos, &eos), 0);
	CHECK_STR(t, "D");
	CHECK_STR(bos, "<b>");
	CHECK_STR(eos, "</e>");
	json_decref(cfg);
	cfg = json_loads("{}", 0, NULL);
	CHECK_INT(ms_chat_template_from_config(cfg, &t, &bos, &eos), MS_ENOENT);
	CHECK(bos == NULL && eos == NULL);
	json_decref(cfg);
	json_decref(msgs);
	json_decref(extra);
}

/* ---------------------------------------------------------------- hostile templates */

TEST(hostile_huge_loops) {
	CHECK_FAILS("{% for i in range(1000000000) %}{% endfor %}", NULL, MS_ETOOBIG);
	CHECK_FAILS("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}", NULL, MS_ETOOBIG);
	CHECK_FAILS("{% for a in range(10000) %}{% for b in range(10000) %}{{ 'xxxxxxxxxxxxxxxxxxxxxxxx' }}{% endfor %}{% endfor %}", NULL, MS_ETOOBIG);
}

TEST(hostile_memory) {
	/* doubling a string: stops at the string/memory limits, not the host's */
	CHECK_FAILS("{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s | length }}",
	            NULL, MS_ETOOBIG);
	CHECK_FAILS("{{ 'x' * 100000000000 }}", NULL, MS_ETOOBIG);
	CHECK_FAILS("{% set ns = namespace(l=[1]) %}{% for i in range(100) %}{% set ns.l = ns.l + ns.l %}{% endfor %}", NULL, MS_ETOOBIG);
	ms_jinja_opts o;
	ms_jinja_opts_default(&o);
	o.max_output = 1000;
	CHECK(render_opts("{% for i in range(2000) %}x{% endfor %}", NULL, &o) == NULL);
	CHECK_INT(last_rc, MS_ETOOBIG);
	CHECK(render_opts("{% for i in range(500) %}x{% endfor %}", NULL, &o) != NULL);
}

TEST(hostile_deep_nesting) {
	char *t = malloc(600000);
	CHECK(t != NULL);
	size_t n = 0;
	for (int i = 0; i < 20000; i++) n += (size_t)sprintf(t + n, "{%% if true %%}");
	t[n] = 0;
	CHECK_FAILS(t, NULL, MS_ETOOBIG);
	n = (size_t)sprintf(t, "{{ ");
	for (int i = 0; i < 50000; i++) t[n++] = '(';
	t[n++] = '1';
	for (int i = 0; i < 50000; i++) t[n++] = ')';
	sprintf(t + n, " }}");
	CHECK_FAILS(t, NULL, MS_ETOOBIG);
	n = (size_t)sprintf(t, "{{ ");
	for (int i = 0; i < 50000; i++) n += (size_t)sprintf(t + n, "not ");
	sprintf(t + n, "1 }}");
	CHECK_FAILS(t, NULL, MS_ETOOBIG);
	n = (size_t)sprintf(t, "{{ 1");
	for (int i = 0; i < 30000; i++) n += (size_t)sprintf(t + n, " + 1");
	sprintf(t + n, " }}");
	const char *r = render(t, NULL); /* a long flat chain is fine or a clean limit error */
	CHECK(r != NULL || last_rc == MS_ETOOBIG);
	free(t);
	CHECK_FAILS("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", NULL, MS_ETOOBIG);
}

TEST(hostile_input_json) {
	/* deeply nested messages */
	char *j = malloc(40000);
	size_t n = 0;
	n += (size_t)sprintf(j, "{\"x\": ");
	for (int i = 0; i < 1000; i++) j[n++] = '[';
	for (int i = 0; i < 1000; i++) j[n++] = ']';
	j[n++] = '}';
	j[n] = 0;
	json_error_t je;
	json_t *ctx = json_loads(j, 0, &je);
	free(j);
	if (ctx) { /* jansson may itself refuse such depth */
		char *out = NULL, err[256];
		int rc = ms_jinja_render("{{ x | tojson }}", ctx, NULL, &out, err, sizeof err);
		CHECK(rc == MS_ETOOBIG || rc == 0);
		free(out);
		json_decref(ctx);
	}
}

/* ---------------------------------------------------------------- CLI */

static char tmpdir[256];

static void write_file(const char *path, const char *data) {
	FILE *f = fopen(path, "w");
	CHECK(f != NULL);
	fputs(data, f);
	fclose(f);
}

/* runs argv; captures stdout / stderr into malloc'd strings; returns the exit status */
static int run_cli(char *const argv[], char **out, char **errs) {
	char po[300], pe[300];
	snprintf(po, sizeof po, "%s/stdout", tmpdir);
	snprintf(pe, sizeof pe, "%s/stderr", tmpdir);
	pid_t pid = fork();
	if (pid == 0) {
		if (!freopen(po, "w", stdout) || !freopen(pe, "w", stderr)) _exit(127);
		execv(argv[0], argv);
		_exit(127);
	}
	int st = 0;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
	*out = test_read_file(po, NULL);
	*errs = test_read_file(pe, NULL);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void cli_setup(const char *fixture, int case_index, json_t **case_out) {
	snprintf(tmpdir, sizeof tmpdir, "/tmp/ms-jinja-XXXXXX");
	CHECK(mkdtemp(tmpdir) != NULL);
	char rel[256], path[512];
	snprintf(rel, sizeof rel, "chat-templates/%s", fixture);
	json_t *d = json_load_file(fixture_path(rel), 0, NULL);
	CHECK(d != NULL);
	json_t *c = json_array_get(json_object_get(d, "cases"), (size_t)case_index);
	CHECK(c != NULL);
	json_t *cfg = json_object();
	json_object_set(cfg, "chat_template", json_object_get(d, "template"));
	/* bos as an AddedToken-style object, eos as a plain string: both forms occur on the Hub */
	json_t *bos = json_object_get(c, "bos_token"), *eos = json_object_get(c, "eos_token");
	if (json_is_string(bos)) json_object_set_new(cfg, "bos_token", json_pack("{s:O,s:b}", "content", bos, "lstrip", 0));
	if (json_is_string(eos)) json_object_set(cfg, "eos_token", eos);
	snprintf(path, sizeof path, "%s/tokenizer_config.json", tmpdir);
	CHECK(json_dump_file(cfg, path, 0) == 0);
	snprintf(path, sizeof path, "%s/messages.json", tmpdir);
	CHECK(json_dump_file(json_object_get(c, "messages"), path, 0) == 0);
	json_decref(cfg);
	*case_out = json_incref(c);
	json_decref(d);
}

static void cli_cleanup(void) {
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	if (system(cmd)) {}
}

static void cli_case(const char *fixture, int idx) {
	json_t *c;
	cli_setup(fixture, idx, &c);
	char bin[512], msgs[300];
	snprintf(bin, sizeof bin, "%s/moonspace", test_bin_dir());
	snprintf(msgs, sizeof msgs, "%s/messages.json", tmpdir);
	int agp = json_is_true(json_object_get(c, "add_generation_prompt"));
	char *argv[] = {bin, "chat-template", tmpdir, "--messages", msgs, agp ? "--add-generation-prompt" : NULL, NULL};
	char *out = NULL, *errs = NULL;
	int st = run_cli(argv, &out, &errs);
	const char *want = json_string_value(json_object_get(c, "expected"));
	const char *want_err = json_string_value(json_object_get(c, "expected_error"));
	if (want_err) {
		CHECK_MSG(st != 0, "%s case %d: exit 0, expected an error", fixture, idx);
		CHECK_MSG(errs && strstr(errs, want_err), "%s case %d: stderr \"%s\"", fixture, idx, errs ? errs : "");
	} else {
		CHECK_MSG(st == 0, "%s case %d: exit %d: %s", fixture, idx, st, errs ? errs : "");
		CHECK(out != NULL && want != NULL);
		size_t n = strlen(out), w = strlen(want);
		int ok = (n == w && !memcmp(out, want, w)) || (n == w + 1 && !memcmp(out, want, w) && out[w] == '\n');
		CHECK_MSG(ok, "%s case %d: stdout \"%s\", expected \"%s\"", fixture, idx, out, want);
	}
	free(out);
	free(errs);
	json_decref(c);
	cli_cleanup();
}

TEST(cli_llama2_multi_turn) { cli_case("llama-2-chat.json", 4); }
TEST(cli_zephyr_generation_prompt) { cli_case("zephyr.json", 5); }
TEST(cli_qwen_no_bos) { cli_case("qwen2-chatml.json", 1); }
TEST(cli_mistral_raise_exception) { cli_case("mistral-7b-instruct-v0.1.json", 0); }

/* MODEL as a repo id (org/name[@rev]) in the Hugging Face cache, as the other runtime tools
 * take it: the snapshot refs/main names, or a pinned commit's */
TEST(cli_repo_id_in_the_cache) {
	json_t *c;
	cli_setup("zephyr.json", 5, &c);
	const char *commit = "0123456789abcdef0123456789abcdef01234567";
	char cmd[2048];
	snprintf(cmd, sizeof cmd,
		 "mkdir -p '%s/hub/models--org--chat/refs' '%s/hub/models--org--chat/snapshots/%s' && "
		 "printf %s > '%s/hub/models--org--chat/refs/main' && "
		 "mv '%s/tokenizer_config.json' '%s/hub/models--org--chat/snapshots/%s/'",
		 tmpdir, tmpdir, commit, commit, tmpdir, tmpdir, tmpdir, commit);
	CHECK_INT(system(cmd), 0);
	snprintf(cmd, sizeof cmd, "%s/hub", tmpdir);
	setenv("HF_HUB_CACHE", cmd, 1);
	char bin[512], msgs[300], pinned[100];
	snprintf(bin, sizeof bin, "%s/moonspace", test_bin_dir());
	snprintf(msgs, sizeof msgs, "%s/messages.json", tmpdir);
	snprintf(pinned, sizeof pinned, "org/chat@%s", commit);
	const char *want = json_string_value(json_object_get(c, "expected"));
	const char *specs[] = {"org/chat", pinned};
	for (int i = 0; i < 2; i++) {
		char *argv[] = {bin, "chat-template", (char *)specs[i], "--messages", msgs, "--add-generation-prompt", NULL};
		char *out = NULL, *errs = NULL;
		int st = run_cli(argv, &out, &errs);
		CHECK_MSG(st == 0, "%s: exit %d: %s", specs[i], st, errs ? errs : "");
		CHECK_MSG(out && !strncmp(out, want, strlen(want)), "%s: stdout \"%s\"", specs[i], out ? out : "");
		free(out);
		free(errs);
	}
	char *argv[] = {bin, "chat-template", "org/none", "--messages", msgs, NULL};
	char *out = NULL, *errs = NULL;
	CHECK(run_cli(argv, &out, &errs) != 0);
	CHECK_MSG(errs && strstr(errs, "org/none") && strstr(errs, "moonspace pull"), "stderr \"%s\"", errs ? errs : "");
	free(out);
	free(errs);
	json_decref(c);
	cli_cleanup();
}

TEST(cli_usage_errors) {
	char bin[512];
	snprintf(bin, sizeof bin, "%s/moonspace", test_bin_dir());
	snprintf(tmpdir, sizeof tmpdir, "/tmp/ms-jinja-XXXXXX");
	CHECK(mkdtemp(tmpdir) != NULL);
	char *out, *errs;
	char *help[] = {bin, "chat-template", "--help", NULL};
	CHECK_INT(run_cli(help, &out, &errs), 0);
	CHECK(out && strstr(out, "--messages"));
	free(out);
	free(errs);
	char *missing[] = {bin, "chat-template", "/nonexistent-model", "--messages", "/nonexistent.json", NULL};
	CHECK(run_cli(missing, &out, &errs) != 0);
	CHECK(errs && strstr(errs, "/nonexistent-model: not a directory, nor a Hub repo id"));
	free(out);
	free(errs);
	char *empty[] = {bin, "chat-template", tmpdir, "--messages", "/nonexistent.json", NULL};
	CHECK(run_cli(empty, &out, &errs) != 0);
	CHECK(errs && strstr(errs, "tokenizer_config.json"));
	free(out);
	free(errs);
	char path[512];
	snprintf(path, sizeof path, "%s/tokenizer_config.json", tmpdir);
	write_file(path, "{\"eos_token\": \"</s>\"}");
	char msgs[512];
	snprintf(msgs, sizeof msgs, "%s/m.json", tmpdir);
	write_file(msgs, "[]");
	char *notmpl[] = {bin, "chat-template", tmpdir, "--messages", msgs, NULL};
	CHECK(run_cli(notmpl, &out, &errs) != 0);
	CHECK(errs && strstr(errs, "chat_template"));
	free(out);
	free(errs);
	cli_cleanup();
}
