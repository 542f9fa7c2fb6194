/* runtime/tokenizer.h: Hugging Face tokenizers (tokenizer.json + tokenizer_config.json).
 *
 * Byte-level BPE (GPT-2), BPE with byte fallback and Metaspace/Replace/Prepend normalizers
 * (Llama, SentencePiece-style), WordPiece with the BERT normalizer and pre-tokenizer,
 * WordLevel, Unigram with the Precompiled charsmap (T5 / XLM-R style); added/special
 * tokens; post-processor templates; decoders. Unicode through utf8proc, pre-tokenizer
 * regexes through PCRE2. Invalid UTF-8 input is handled (each invalid sequence reads as
 * U+FFFD), never crashed on. A loaded tokenizer is read-only: one may serve many threads.
 */
#ifndef MS_TOKENIZER_H
#define MS_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "common/ms.h"

typedef struct ms_tokenizer ms_tokenizer;

/* Loads dir/tokenizer.json (required) and dir/tokenizer_config.json (optional: bos/eos
 * tokens, add_bos_token, chat_template). On failure writes a message naming the file. */
int ms_tokenizer_load(const char *dir, ms_tokenizer **out, char *err, size_t errlen);
void ms_tokenizer_free(ms_tokenizer *tok);

/* Encodes text (len bytes) into a malloc'd array of ids. add_special: apply the
 * post-processor template (BOS, [CLS] ... [SEP]). */
int ms_tokenizer_encode(const ms_tokenizer *tok, const char *text, size_t len, int add_special,
			int32_t **ids, size_t *n_ids);
/* Encodes a pair with the template's pair form (BERT: [CLS] A [SEP] B [SEP]); token type
 * ids (0/1) go to *type_ids when non-NULL. */
int ms_tokenizer_encode_pair(const ms_tokenizer *tok, const char *a, size_t alen, const char *b,
			     size_t blen, int32_t **ids, size_t *n_ids, int32_t **type_ids);
/* Decodes ids to malloc'd UTF-8 text through the tokenizer's decoders.
 * skip_special: drop special tokens (as transformers' skip_special_tokens). Invalid byte
 * sequences become U+FFFD, as in transformers. */
int ms_tokenizer_decode(const ms_tokenizer *tok, const int32_t *ids, size_t n_ids, int skip_special,
			char **text);
/* The same, appended to out with its length: the text may hold U+0000 (a <0x00> byte
 * token), which a C string would cut short. */
int ms_tokenizer_decode_buf(const ms_tokenizer *tok, const int32_t *ids, size_t n_ids, int skip_special,
			    ms_buf *out);

size_t ms_tokenizer_vocab_size(const ms_tokenizer *tok);
/* -1 when the tokenizer has none. */
int32_t ms_tokenizer_bos_id(const ms_tokenizer *tok);
int32_t ms_tokenizer_eos_id(const ms_tokenizer *tok);
int32_t ms_tokenizer_token_to_id(const ms_tokenizer *tok, const char *token);
/* The token's string as stored in the vocab (NULL when out of range). */
const char *ms_tokenizer_id_to_token(const ms_tokenizer *tok, int32_t id);
int ms_tokenizer_is_special(const ms_tokenizer *tok, int32_t id);
/* bos_token / eos_token strings from tokenizer_config.json (NULL when absent) and its
 * chat_template (NULL when absent). */
const char *ms_tokenizer_bos_token(const ms_tokenizer *tok);
const char *ms_tokenizer_eos_token(const ms_tokenizer *tok);
const char *ms_tokenizer_chat_template(const ms_tokenizer *tok);

/* Streaming decode for generation: feed generated ids one at a time; each call appends to
 * out the text that is now final (whole UTF-8 characters only, never a split one), as
 * transformers' TextStreamer does. ms_detok_stream_finish flushes the rest (an
 * incomplete tail becomes U+FFFD). Only a short window of ids is decoded per call. */
typedef struct ms_detok_stream {
	const ms_tokenizer *tok;
	int skip_special;
	int32_t *ids;
	size_t n, cap;
	size_t emitted; /* bytes of the decoded text already handed out */
	size_t prefix, read; /* window: ids[prefix..read) is context already shown */
} ms_detok_stream;
void ms_detok_stream_init(ms_detok_stream *s, const ms_tokenizer *tok, int skip_special);
/* Feeds context that is not to be printed (e.g. the prompt's ids), so that the first
 * generated token decodes as it would in the full text (its leading space kept). */
int ms_detok_stream_prime(ms_detok_stream *s, const int32_t *ids, size_t n);
int ms_detok_stream_push(ms_detok_stream *s, int32_t id, ms_buf *out);
int ms_detok_stream_finish(ms_detok_stream *s, ms_buf *out);
void ms_detok_stream_free(ms_detok_stream *s);

#endif
