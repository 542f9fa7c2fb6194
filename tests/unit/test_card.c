/* tests/unit/test_card.c: README.md front matter and Markdown body. */
#include "host/card.h"
#include "tests/testlib.h"

TEST_SUITE("card")

static int parse(ms_card *c, const char *text, char *err, size_t errlen) {
	ms_card_init(c);
	err[0] = 0;
	return ms_card_parse(c, text, strlen(text), err, errlen);
}

TEST(every_field) {
	const char *readme =
		"---\n"
		"title: Tiny Stories\n"
		"emoji: \"\xF0\x9F\x93\x96\"\n"
		"colorFrom: Blue\n"
		"colorTo: purple\n"
		"sdk: lua\n"
		"app_file: main.lua\n"
		"short_description: Write a short story\n"
		"models:\n"
		"  - roneneldan/TinyStories-1M\n"
		"  - org/model@v1.0\n"
		"preload_from_hub:\n"
		"  - \"org/model config.json,model.safetensors\"\n"
		"tags: [demo, text-generation]\n"
		"license: apache-2.0\n"
		"pinned: true\n"
		"private: false\n"
		"timeout: 90s\n"
		"memory: 1GB\n"
		"concurrency: 3\n"
		"max_queue: 10\n"
		"custom_thing: {a: 1, b: [x, 2.5, null]}\n"
		"---\n"
		"# Hello\n\nBody text.\n";
	ms_card c;
	char err[256];
	CHECK_MSG(parse(&c, readme, err, sizeof err) == 0, "err: %s", err);
	CHECK_STR(c.title, "Tiny Stories");
	CHECK_STR(c.emoji, "\xF0\x9F\x93\x96");
	CHECK_STR(c.color_from, "blue");
	CHECK_STR(c.color_to, "purple");
	CHECK_STR(c.sdk, "lua");
	CHECK_STR(c.app_file, "main.lua");
	CHECK_STR(c.short_description, "Write a short story");
	CHECK_INT(c.nmodels, 2);
	CHECK_STR(c.models[0], "roneneldan/TinyStories-1M");
	CHECK_STR(c.models[1], "org/model@v1.0");
	CHECK_INT(c.npreload, 1);
	CHECK_STR(c.preload_from_hub[0], "org/model config.json,model.safetensors");
	CHECK_INT(c.ntags, 2);
	CHECK_STR(c.tags[1], "text-generation");
	CHECK_STR(c.license, "apache-2.0");
	CHECK_INT(c.pinned, 1);
	CHECK_INT(c.private_, 0);
	CHECK_INT(c.timeout_s, 90);
	CHECK_INT(c.memory_mb, 1024);
	CHECK_INT(c.concurrency, 3);
	CHECK_INT(c.max_queue, 10);
	CHECK_INT(c.body_line, 24);
	CHECK(strstr(c.html, "<h1>Hello</h1>") != NULL);
	/* unknown fields are kept with their YAML types */
	json_t *ct = json_object_get(c.data, "custom_thing");
	CHECK(json_is_object(ct));
	CHECK_INT(json_integer_value(json_object_get(ct, "a")), 1);
	json_t *b = json_object_get(ct, "b");
	CHECK_STR(json_string_value(json_array_get(b, 0)), "x");
	CHECK_NEAR(json_real_value(json_array_get(b, 1)), 2.5, 1e-12);
	CHECK(json_is_null(json_array_get(b, 2)));
	CHECK(json_is_true(json_object_get(c.data, "pinned")));
	/* the normalised JSON has the limits and keeps unknown fields */
	json_t *j = ms_card_to_json(&c);
	CHECK(j != NULL);
	CHECK_INT(json_integer_value(json_object_get(j, "memory")), 1024);
	CHECK_STR(json_string_value(json_object_get(j, "colorFrom")), "blue");
	CHECK(json_is_object(json_object_get(j, "custom_thing")));
	CHECK_INT(json_array_size(json_object_get(j, "models")), 2);
	json_decref(j);
	ms_card_free(&c);
	CHECK(c.title == NULL && c.data == NULL);
}

TEST(defaults) {
	ms_card c;
	char err[256];
	CHECK_INT(parse(&c, "---\ntitle: x\n---\n", err, sizeof err), 0);
	CHECK_STR(c.sdk, "lua");
	CHECK_STR(c.app_file, "app.lua");
	CHECK_INT(c.timeout_s, 60);
	CHECK_INT(c.memory_mb, 256);
	CHECK_INT(c.concurrency, 1);
	CHECK_INT(c.max_queue, 64);
	CHECK_INT(c.nmodels, 0);
	CHECK(c.emoji == NULL);
	CHECK_STR(c.html, "");
	ms_card_free(&c);
	/* empty front matter, CRLF line ends and a BOM */
	CHECK_INT(parse(&c, "\xEF\xBB\xBF---\r\n---\r\nhi\r\n", err, sizeof err), 0);
	CHECK_STR(c.app_file, "app.lua");
	CHECK(strstr(c.html, "hi") != NULL);
	ms_card_free(&c);
	/* static sdk defaults to index.html */
	CHECK_INT(parse(&c, "---\nsdk: static\n---\n", err, sizeof err), 0);
	CHECK_STR(c.app_file, "index.html");
	ms_card_free(&c);
}

TEST(bad_colour) {
	ms_card c;
	char err[256];
	CHECK_INT(parse(&c, "---\ntitle: x\n\ncolorFrom: orange\n---\n", err, sizeof err), MS_EFORMAT);
	CHECK_MSG(strstr(err, "README.md line 4: colorFrom must be one of red, yellow, green, blue, indigo, purple, pink, gray") != NULL,
		  "err: %s", err);
	CHECK(strstr(err, "orange") != NULL);
	CHECK(c.title == NULL && c.color_from == NULL && c.html == NULL);
	/* the raw front matter stays for the caller (e.g. to honour private: true) */
	CHECK_STR(json_string_value(json_object_get(c.data, "title")), "x");
	ms_card_free(&c);
	CHECK(c.data == NULL);
}

TEST(missing_front_matter) {
	ms_card c;
	char err[256];
	CHECK_INT(parse(&c, "# Just markdown\n", err, sizeof err), MS_EFORMAT);
	CHECK_MSG(strstr(err, "README.md: no YAML front matter (--- ... ---)") == err, "err: %s", err);
	CHECK_INT(parse(&c, "---\ntitle: x\n", err, sizeof err), MS_EFORMAT);
	CHECK_MSG(strstr(err, "no closing") != NULL, "err: %s", err);
	CHECK_INT(parse(&c, "", err, sizeof err), MS_EFORMAT);
}

TEST(bad_yaml_line) {
	ms_card c;
	char err[256];
	CHECK_INT(parse(&c, "---\ntitle: ok\nemoji: [unclosed\nsdk: lua\n---\n", err, sizeof err), MS_EFORMAT);
	CHECK_MSG(strncmp(err, "README.md line ", 15) == 0 && strstr(err, "YAML error") != NULL, "err: %s", err);
	int line = atoi(err + 15);
	CHECK_MSG(line >= 3 && line <= 5, "line %d: %s", line, err);
	CHECK_INT(parse(&c, "---\na: b\n  c: d: e\n---\n", err, sizeof err), MS_EFORMAT);
	CHECK_MSG(strncmp(err, "README.md line 3:", 17) == 0, "err: %s", err);
	/* a top-level list is not a card */
	CHECK_INT(parse(&c, "---\n- a\n- b\n---\n", err, sizeof err), MS_EFORMAT);
	CHECK_MSG(strstr(err, "line 2") != NULL, "err: %s", err);
}

TEST(bad_fields) {
	struct { const char *yaml, *want; } cases[] = {
		{"sdk: gradio", "line 2: sdk must be lua"},
		{"title: [a, b]", "line 2: title must be text"},
		{"pinned: maybe", "line 2: pinned must be true or false"},
		{"models: [gpt2]", "not a model id"},
		{"models: [\"a/b@\"]", "not a model id"},
		{"models: {a: 1}", "models must be a list"},
		{"tags: [[x]]", "each item of tags must be text"},
		{"timeout: 0", "timeout must be between 1 and 3600"},
		{"timeout: soon", "timeout must be a whole number"},
		{"memory: 5TB", "memory must be a whole number"},
		{"concurrency: 100", "concurrency must be between 1 and 64"},
		{"max_queue: -1", "max_queue must be between 0 and 100000"},
		{"app_file: ../x.lua", "app_file must be a relative path"},
		{"app_file: /etc/x.lua", "app_file must be a relative path"},
		{"app_file: main.py", "app_file must name a .lua file"},
		{"x: &a [*a, *a]\ny: *a", NULL},
	};
	for (size_t i = 0; i < MS_ARRAY_LEN(cases); i++) {
		char text[256], err[256];
		snprintf(text, sizeof text, "---\n%s\n---\n", cases[i].yaml);
		ms_card c;
		int rc = parse(&c, text, err, sizeof err);
		if (!cases[i].want) { /* self-referencing alias: refused, not a hang or a crash */
			CHECK_MSG(rc == MS_EFORMAT, "%s: rc %d", cases[i].yaml, rc);
			ms_card_free(&c);
			continue;
		}
		CHECK_MSG(rc == MS_EFORMAT, "%s: rc %d", cases[i].yaml, rc);
		CHECK_MSG(strstr(err, cases[i].want) != NULL, "%s: err \"%s\"", cases[i].yaml, err);
		CHECK_MSG(strncmp(err, "README.md", 9) == 0, "%s", err);
		ms_card_free(&c);
	}
}

TEST(error_points_at_item) {
	ms_card c;
	char err[256];
	CHECK_INT(parse(&c, "---\ntitle: x\nmodels:\n  - good/one\n  - bad\n---\n", err, sizeof err), MS_EFORMAT);
	CHECK_MSG(strstr(err, "README.md line 5: models: \"bad\" is not a model id") == err, "%s", err);
	ms_card_free(&c);
}

TEST(alias_bomb) {
	/* billion laughs: must stop at the node limit quickly */
	const char *y = "---\na: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
			"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
			"e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n---\n";
	ms_card c;
	char err[256];
	CHECK_INT(parse(&c, y, err, sizeof err), MS_EFORMAT);
	CHECK(strstr(err, "too large") != NULL);
}

TEST(model_split) {
	char repo[64], rev[64];
	CHECK_INT(ms_card_model_split("org/name", repo, sizeof repo, rev, sizeof rev), 0);
	CHECK_STR(repo, "org/name");
	CHECK_STR(rev, "");
	CHECK_INT(ms_card_model_split("org/na.me-1@refs/pr/1", repo, sizeof repo, rev, sizeof rev), 0);
	CHECK_STR(repo, "org/na.me-1");
	CHECK_STR(rev, "refs/pr/1");
	CHECK_INT(ms_card_model_split("noslash", repo, sizeof repo, rev, sizeof rev), MS_EINVAL);
	CHECK_INT(ms_card_model_split("a/b/c", repo, sizeof repo, rev, sizeof rev), MS_EINVAL);
	CHECK_INT(ms_card_model_split("../b", repo, sizeof repo, rev, sizeof rev), MS_EINVAL);
	CHECK_INT(ms_card_model_split("a/b@../x", repo, sizeof repo, rev, sizeof rev), MS_EINVAL);
	CHECK_INT(ms_card_model_split("a/b", repo, 3, rev, sizeof rev), MS_EINVAL);
}

TEST(markdown_sanitized) {
	const char *md =
		"# Title\n\n"
		"<script>alert(1)</script>\n\n"
		"Inline <img src=x onerror=alert(1)> html.\n\n"
		"[click](javascript:alert(1)) [upper](JaVaScRiPt:alert(2)) [ent](&#106;avascript:alert(3)) "
		"[ok](https://example.com/a)\n\n"
		"![img](javascript:alert(4))\n\n"
		"| a | b |\n|---|---|\n| 1 | 2 |\n\n"
		"~~gone~~ and www.example.org\n\n"
		"- [x] done\n- [ ] todo\n";
	char *html = ms_markdown_to_html(md, strlen(md));
	CHECK(html != NULL);
	CHECK_MSG(strstr(html, "<script") == NULL, "%s", html);
	CHECK_MSG(strstr(html, "onerror") == NULL, "%s", html);
	CHECK_MSG(strcasestr(html, "javascript:") == NULL, "%s", html);
	CHECK(strstr(html, "<h1>Title</h1>") != NULL);
	CHECK(strstr(html, "href=\"https://example.com/a\"") != NULL);
	CHECK_MSG(strstr(html, "<table>") != NULL && strstr(html, "<td>1</td>") != NULL, "%s", html);
	CHECK(strstr(html, "<del>gone</del>") != NULL);
	CHECK(strstr(html, "href=\"http://www.example.org\"") != NULL);
	CHECK(strstr(html, "type=\"checkbox\"") != NULL);
	free(html);
	/* invalid UTF-8 never reaches the page */
	html = ms_markdown_to_html("a\xff\xfe b", 6);
	CHECK(html != NULL);
	CHECK(strchr(html, '\xff') == NULL);
	free(html);
}

TEST(load_file) {
	char dir[] = "/tmp/ms_card_XXXXXX";
	CHECK(mkdtemp(dir) != NULL);
	char path[256];
	snprintf(path, sizeof path, "%s/README.md", dir);
	ms_card c;
	char err[256];
	ms_card_init(&c);
	CHECK_INT(ms_card_load(&c, path, err, sizeof err), MS_ENOENT);
	CHECK(strstr(err, "README.md") == err);
	FILE *f = fopen(path, "w");
	fputs("---\ntitle: From disk\ntags: single\n---\nText *em*\n", f);
	fclose(f);
	CHECK_INT(ms_card_load(&c, path, err, sizeof err), 0);
	CHECK_STR(c.title, "From disk");
	CHECK_INT(c.ntags, 1);
	CHECK_STR(c.tags[0], "single");
	CHECK(strstr(c.html, "<em>em</em>") != NULL);
	ms_card_free(&c);
	unlink(path);
	rmdir(dir);
}
