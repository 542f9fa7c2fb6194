/* runtime/tokenizer_internal.h: the tokenizer's private parts, shared by tokenizer*.c.
 *
 * The pipeline mirrors Hugging Face `tokenizers`: added tokens are split off first, the
 * rest is normalized, pre-tokenized into pieces, and each piece goes through the model
 * (BPE, WordPiece, WordLevel); the post-processor template adds special tokens. Decoding
 * runs the decoder chain over the token strings. Text is carried as (pointer, length)
 * pieces because valid UTF-8 may contain NUL.
 */
#ifndef MS_TOKENIZER_INTERNAL_H
#define MS_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

#include "common/ms.h"
#include "runtime/tokenizer.h"

/* ---- strings and UTF-8 (tokenizer_text.c) ---- */

typedef struct tk_piece { char *s; size_t len; } tk_piece;
typedef struct tk_pieces { tk_piece *v; size_t n, cap; } tk_pieces;

void tk_pieces_init(tk_pieces *p);
void tk_pieces_free(tk_pieces *p);
/* Appends a copy of s[0..len). */
int tk_pieces_push(tk_pieces *p, const char *s, size_t len);
/* Appends s, taking ownership (freed on failure). */
int tk_pieces_push_owned(tk_pieces *p, char *s, size_t len);

/* Decodes one UTF-8 character at s (n bytes available): returns its length (1..4) and the
 * code point in *cp, or 0 when the bytes there are not a valid character. */
size_t tk_utf8_decode(const unsigned char *s, size_t n, int32_t *cp);
size_t tk_utf8_encode(int32_t cp, char out[4]);
/* Length of the valid character at s, or 1 for an invalid byte (to step over it). */
size_t tk_utf8_step(const char *s, size_t n);
/* Copies s into a malloc'd NUL-terminated string, each invalid byte sequence replaced by
 * U+FFFD (one per maximal invalid subpart, as Python's errors="replace"). */
int tk_utf8_sanitize(const char *s, size_t len, char **out, size_t *out_len);

/* Compiles a Hugging Face pattern ({"String": s} or {"Regex": r}) to PCRE2 (UTF, UCP). */
pcre2_code *tk_regex_compile(const char *pattern, int literal, char *err, size_t errlen);

/* A span of a piece that a pattern matched (or not). */
typedef struct tk_span { size_t start, end; int match; } tk_span;
/* Splits s by the regex into alternating matched / unmatched spans covering all of s. */
int tk_regex_spans(const pcre2_code *re, const char *s, size_t len, tk_span **spans, size_t *n);

/* ---- normalizers and pre-tokenizers (tokenizer_text.c) ---- */

enum tk_norm_type {
	TKN_SEQUENCE, TKN_BERT, TKN_LOWERCASE, TKN_STRIP, TKN_STRIP_ACCENTS,
	TKN_NFC, TKN_NFD, TKN_NFKC, TKN_NFKD, TKN_REPLACE, TKN_PREPEND, TKN_PRECOMPILED,
};
typedef struct tk_normalizer {
	int type;
	struct tk_normalizer *kids;
	size_t n_kids;
	int clean_text, chinese, strip_accents, lowercase; /* BertNormalizer */
	int left, right;                                    /* Strip */
	pcre2_code *re;                                     /* Replace */
	char *content;                                      /* Replace / Prepend */
	uint32_t *trie;                                     /* Precompiled: darts-clone units */
	size_t trie_n;
	char *blob;                                         /* Precompiled: NUL-separated outputs */
	size_t blob_len;
} tk_normalizer;

/* Precompiled (SentencePiece charsmap): takes the decoded precompiled_charsmap bytes. */
int tk_precompiled_init(tk_normalizer *n, const unsigned char *data, size_t len);

/* Split behaviours, as tokenizers' SplitDelimiterBehavior. */
enum { TK_REMOVED, TK_ISOLATED, TK_MERGED_PREV, TK_MERGED_NEXT, TK_CONTIGUOUS };

enum tk_pretok_type {
	TKP_SEQUENCE, TKP_BYTELEVEL, TKP_BERT, TKP_WHITESPACE, TKP_WHITESPACE_SPLIT,
	TKP_METASPACE, TKP_SPLIT, TKP_DIGITS, TKP_PUNCT,
};
enum { TK_PREPEND_ALWAYS, TK_PREPEND_FIRST, TK_PREPEND_NEVER };
typedef struct tk_pretok {
	int type;
	struct tk_pretok *kids;
	size_t n_kids;
	int add_prefix_space, use_regex;   /* ByteLevel */
	pcre2_code *re;                    /* ByteLevel / Split / Whitespace */
	int behavior, invert;              /* Split */
	char *replacement;                 /* Metaspace */
	int prepend_scheme, split;         /* Metaspace */
	int individual_digits;             /* Digits */
} tk_pretok;

int tk_normalize(const tk_normalizer *n, const char *s, size_t len, char **out, size_t *out_len);
/* Pre-tokenizes each piece of p in place. first: the text is the start of the input (for
 * Metaspace's prepend_scheme "first"). */
int tk_pretokenize(const tk_pretok *pt, tk_pieces *p, int first);
/* GPT-2's byte <-> printable-character table: the character for byte b as UTF-8. */
const char *tk_byte_char(unsigned char b);
/* The byte that code point cp stands for, or -1. */
int tk_char_byte(int32_t cp);

void tk_normalizer_free(tk_normalizer *n);
void tk_pretok_free(tk_pretok *p);

/* ---- hash maps (tokenizer_model.c) ---- */

/* string -> id; the map owns copies of its keys. */
typedef struct tk_strmap { const char **keys; size_t *lens; int32_t *vals; size_t cap, n; } tk_strmap;
int tk_strmap_put(tk_strmap *m, const char *key, size_t len, int32_t val);
int32_t tk_strmap_get(const tk_strmap *m, const char *key, size_t len); /* -1 when absent */
void tk_strmap_free(tk_strmap *m);

/* (left id, right id) -> (rank, merged id) */
typedef struct tk_pairmap { uint64_t *keys; int32_t *rank, *merged; size_t cap, n; } tk_pairmap;

/* Adds a merge; the first (lowest-rank) occurrence of a pair wins, as in tokenizers. */
int tk_pairmap_put(tk_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t merged);

/* ---- models ---- */

enum { TKM_BPE, TKM_WORDPIECE, TKM_WORDLEVEL, TKM_UNIGRAM };
typedef struct tk_model {
	int type;
	tk_strmap vocab;         /* model vocab, string -> id */
	tk_pairmap merges;       /* BPE */
	int byte_fallback, fuse_unk, ignore_merges;
	int32_t unk_id;          /* -1 when none */
	char *cont_prefix;       /* BPE continuing_subword_prefix / WordPiece prefix ("##") */
	char *eow_suffix;        /* BPE end_of_word_suffix */
	int32_t byte_ids[256];   /* BPE byte fallback: id of <0xXX>, -1 when absent */
	int max_chars;           /* WordPiece max_input_chars_per_word */
	double *scores;          /* Unigram: log probability per id */
	double min_score;
	size_t max_tok_len;      /* Unigram: longest piece in bytes */
} tk_model;

/* Appends the ids of one pre-tokenized piece. */
int tk_model_encode(const tk_model *m, const char *s, size_t len, int32_t **ids, size_t *n, size_t *cap);
void tk_model_free(tk_model *m);
int tk_ids_push(int32_t **ids, size_t *n, size_t *cap, int32_t id);

/* ---- added tokens, post-processor, decoders ---- */

typedef struct tk_added {
	char *content;
	size_t len;
	int32_t id;
	int special, lstrip, rstrip, single_word, normalized;
} tk_added;

/* One item of a template: a sequence (A or B) or special-token ids. */
typedef struct tk_tmpl_item { int is_seq, seq, type_id; int32_t *ids; size_t n_ids; } tk_tmpl_item;
typedef struct tk_template { tk_tmpl_item *items; size_t n; } tk_template;

enum tk_dec_type {
	TKD_BYTELEVEL, TKD_METASPACE, TKD_REPLACE, TKD_BYTEFALLBACK, TKD_FUSE, TKD_STRIP,
	TKD_WORDPIECE, TKD_BPE,
};
typedef struct tk_decoder {
	int type;
	char *a;              /* Metaspace replacement, Replace content, Strip content, prefix/suffix */
	pcre2_code *re;       /* Replace */
	int start, stop;      /* Strip */
	int prepend, cleanup; /* Metaspace: strip the first space; WordPiece: cleanup */
} tk_decoder;

struct ms_tokenizer {
	tk_model model;
	char **id_to_tok;     /* every id (model and added), NULL for holes */
	size_t n_ids;
	uint8_t *special;     /* per id: an added token marked special */
	tk_added *added;
	size_t n_added;
	/* for matching, per `normalized` flag f: content -> index into added, the distinct
	 * lengths (longest first) and which bytes start a token */
	tk_strmap amap[2];
	size_t *alens[2], n_alens[2];
	uint8_t afirst[2][256];
	int has_normalizer, has_pretok;
	tk_normalizer norm;
	tk_pretok pretok;
	int has_post;
	tk_template single, pair;
	tk_decoder *dec;      /* the decoder chain (Sequence flattened) */
	size_t n_dec;
	int has_decoder;
	int cleanup_spaces;   /* tokenizer_config clean_up_tokenization_spaces */
	char *bos_token, *eos_token, *chat_template;
	int32_t bos_id, eos_id;
};

struct json_t;
int tk_parse_decoder(ms_tokenizer *tok, struct json_t *j, char *err, size_t errlen);
int tk_decode_tokens(const ms_tokenizer *tok, const int32_t *ids, size_t n, int skip_special, ms_buf *out);
void tk_decoder_free(tk_decoder *d);

#endif
