/* srv_openai.h — the OpenAI endpoints' JSON in and out: request parsing and validation, response
 * and stream-chunk builders, the chat template, /tokenize and /detokenize.
 *
 * Pure functions, no sockets: the HTTP layer hands a request body in and gets a request struct (or
 * an srv_error with its HTTP status, param and message) out; the engine's results go back through
 * the builders as jansson objects, which srv_sse frames for streams. Validation follows the OpenAI
 * API (and vLLM's extensions where OpenAI has none): wrong types and out-of-range values are 400
 * naming the field as a path ("messages[1].content"), unknown fields are ignored, null means "not
 * given". Every string handed to a builder may be any bytes: invalid UTF-8 is repaired (U+FFFD),
 * as jansson only holds valid UTF-8.
 *
 * Flow of a completion: srv_completion_req_parse → tokenize each prompt (text prompts with
 * add_special = true) → srv_resolve_max_tokens per prompt → engine → srv_stop per choice →
 * srv_completion_chunk per delta / srv_completion_response at the end.
 * Flow of a chat: srv_chat_req_parse → srv_chat_render → tokenize with add_special = false and
 * parse_special = true (the template already holds BOS and the control tokens) → the same.
 * Thread safety: every function may run on any thread; a request struct belongs to one thread at a
 * time.
 */
#ifndef SRV_OPENAI_H
#define SRV_OPENAI_H

#include "rt_sampler.h"
#include "srv_errors.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- Limits ---- */

#define SRV_MAX_N         16      /* n: choices per prompt */
#define SRV_MAX_PROMPTS   64      /* prompts in one /v1/completions batch */
#define SRV_MAX_STOP      4       /* stop strings */
#define SRV_MAX_LOGPROBS  20      /* completions `logprobs`, chat `top_logprobs` */
#define SRV_LOGPROB_FLOOR -9999.0 /* what a -inf logprob is written as (JSON has no infinities) */

/* ---- The served model, as the parsers and /v1/models see it ---- */

typedef struct srv_model_info {
    const char *id;        /* served model name; a request naming another model is a 404.
                              NULL = any name is accepted (borrowed) */
    int32_t n_vocab;       /* token ids in prompts, logit_bias and /detokenize must be below it;
                              0 = not checked */
    int32_t max_model_len; /* context length in tokens (prompt + completion) */
    int64_t created;       /* unix seconds, for /v1/models */
} srv_model_info;

/* ---- Sampling ---- */

typedef struct srv_sampling {
    float temperature;      /* [0, 2]; 0 = greedy; default 1 */
    float top_p;            /* (0, 1]; default 1 (off) */
    int32_t top_k;          /* >= 1 keeps the k best; 0 = off (the request's -1 and 0); default 0 */
    float min_p;            /* [0, 1]; default 0 (off) */
    float presence_penalty; /* [-2, 2]; default 0 */
    float frequency_penalty;   /* [-2, 2]; default 0 */
    float repetition_penalty;  /* (0, 2]; default 1 (off) */
    bool has_seed;             /* seed given */
    int64_t seed;              /* any JSON integer */
    rt_logit_bias *logit_bias; /* [n_logit_bias], owned by the request; NULL when none. Ids are
                                  checked against srv_model_info.n_vocab, biases in [-100, 100] */
    size_t n_logit_bias;
    bool ignore_eos; /* keep generating past EOS (vLLM extension); default false */
} srv_sampling;

/* The sampler's parameters for s, with logprobs (-1 = none, 0..20) from the request: bias points
 * into s (borrowed: s must outlive the returned struct until rt_sampler_create copies it); the
 * seed's bits are kept as they are (a negative seed is a valid key). */
rt_sampling_params srv_sampling_params(const srv_sampling *s, int32_t logprobs);

/* ---- POST /v1/completions ---- */

/* One prompt: text or token ids, never both. */
typedef struct srv_prompt {
    bool is_tokens;
    char *text; /* text form: NUL-terminated, may hold NULs (text_len counts them) */
    size_t text_len;
    int32_t *tokens; /* token form: [n_tokens] ids, n_tokens >= 1 */
    size_t n_tokens;
} srv_prompt;

typedef struct srv_completion_req {
    char *model;         /* the request's "model", or NULL when absent */
    srv_prompt *prompts; /* [n_prompts], 1..SRV_MAX_PROMPTS: a string, strings, ids or arrays
                            of ids all become this list */
    size_t n_prompts;
    int32_t max_tokens; /* >= 0 (0 makes sense with echo); default 16 */
    int32_t n;          /* choices per prompt, 1..SRV_MAX_N; default 1. Choice index =
                           prompt index * n + j */
    bool stream;        /* default false */
    bool include_usage; /* stream_options.include_usage; default false */
    bool echo;          /* prepend the prompt to each choice's text; default false */
    int32_t logprobs;   /* top logprobs per token, 0..SRV_MAX_LOGPROBS; -1 = null (none) */
    char **stop;        /* [n_stop] stop strings (not empty, NUL-terminated) */
    size_t *stop_len;   /* [n_stop] their lengths in bytes */
    size_t n_stop;      /* 0..SRV_MAX_STOP */
    srv_sampling sampling;
} srv_completion_req;

/* Parses and validates a /v1/completions body of len bytes into *req (caller-owned storage,
 * filled even on failure so that srv_completion_req_close is always safe). model may be NULL (no
 * model or vocabulary checks). Returns 0, or a negative FQ_E* code with err filled: 400 for bad
 * JSON ("invalid JSON: <why> at line L, column C"), a missing prompt, a wrong type or an
 * out-of-range value (param names the field); 404 with code "model_not_found" for another
 * model; FQ_ENOMEM with a 500. */
int srv_completion_req_parse(const char *body, size_t len, const srv_model_info *model,
                             srv_completion_req *req, srv_error *err);
void srv_completion_req_close(srv_completion_req *req); /* frees the members; zeroes *req */

/* ---- POST /v1/chat/completions ---- */

typedef enum { SRV_ROLE_SYSTEM = 0, SRV_ROLE_USER = 1, SRV_ROLE_ASSISTANT = 2 } srv_role;

typedef struct srv_chat_msg {
    srv_role role; /* "system" (and "developer", its newer name), "user", "assistant" */
    char *content; /* NUL-terminated (may hold NULs); a list of text parts is joined with "\n"
                      (as vLLM does for string templates); an assistant's null content is "" */
    size_t content_len;
} srv_chat_msg;

typedef struct srv_chat_req {
    char *model;            /* the request's "model", or NULL when absent */
    srv_chat_msg *messages; /* [n_messages], at least one */
    size_t n_messages;
    int32_t max_tokens; /* max_completion_tokens, else max_tokens, >= 1; -1 = not given (up to
                           the context: see srv_resolve_max_tokens) */
    int32_t n;          /* 1..SRV_MAX_N; default 1 */
    bool stream;
    bool include_usage;         /* stream_options.include_usage */
    bool logprobs;              /* return the sampled tokens' logprobs; default false */
    int32_t top_logprobs;       /* 0..SRV_MAX_LOGPROBS alternatives per token; > 0 needs logprobs */
    bool add_generation_prompt; /* vLLM extension; default true */
    char **stop;                /* as in srv_completion_req */
    size_t *stop_len;
    size_t n_stop;
    srv_sampling sampling;
} srv_chat_req;

/* Parses and validates a /v1/chat/completions body, as srv_completion_req_parse does (messages
 * required: roles system/developer, user, assistant; content a string or a list of
 * {"type": "text", "text": ...} parts). */
int srv_chat_req_parse(const char *body, size_t len, const srv_model_info *model, srv_chat_req *req,
                       srv_error *err);
void srv_chat_req_close(srv_chat_req *req); /* frees the members; zeroes *req */

/* ---- The context check ---- */

/* Checks n_prompt prompt tokens against the context and settles the completion budget:
 * *max_tokens < 0 (not given) becomes max_model_len - n_prompt. 400 with code
 * "context_length_exceeded" (param `param`, e.g. "prompt" or "messages") when
 * n_prompt + *max_tokens > max_model_len or the prompt alone fills the context, with the
 * numbers in the message; 400 when n_prompt is 0 (an empty prompt gives the model nothing to
 * continue). */
int srv_resolve_max_tokens(size_t n_prompt, int32_t *max_tokens, int32_t max_model_len,
                           const char *param, srv_error *err);

/* ---- Chat template ---- */

typedef enum {
    SRV_CHAT_UNSUPPORTED = 0,
    SRV_CHAT_CHATML, /* <|im_start|>role\ncontent<|im_end|>\n (SmolLM2, Qwen2, ...) */
    SRV_CHAT_LLAMA3  /* <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|> */
} srv_chat_format;

/* Which format a Jinja chat template is (NULL = SRV_CHAT_CHATML: a model without a template gets
 * plain ChatML); a start-up check for the daemon. */
srv_chat_format srv_chat_template_format(const char *tmpl);

/* Renders messages to prompt text the way the model's template does — no Jinja engine: the
 * template (NULL = plain ChatML) is recognized as one of srv_chat_format and rendered natively,
 * byte for byte as transformers' apply_chat_template on these templates:
 *   ChatML: "<|im_start|>{role}\n{content}<|im_end|>\n" per message; a template that writes a
 *           default system message when the first message is not a system one (SmolLM2's "You are
 *           a helpful AI assistant named SmolLM, ...") gets that text taken from the template;
 *           add_generation_prompt appends "<|im_start|>assistant\n".
 *   Llama-3: bos_token (when the template uses it; NULL = "") before the first message, then
 *           "<|start_header_id|>{role}<|end_header_id|>\n\n{content | trim}<|eot_id|>" per
 *           message; add_generation_prompt appends the assistant header.
 * On success *out is malloc'd and NUL-terminated (caller frees), *out_len excludes the NUL.
 * Errors: 500 "chat template is not supported" for any other template (FQ_EIO), FQ_ENOMEM. */
int srv_chat_render(const char *tmpl, const char *bos_token, const srv_chat_msg *msgs,
                    size_t n_msgs, bool add_generation_prompt, char **out, size_t *out_len,
                    srv_error *err);

/* ---- POST /tokenize, POST /detokenize ---- */

typedef struct srv_tokenize_req {
    char *model;  /* or NULL */
    bool is_chat; /* "messages" given instead of "prompt" (vLLM's chat form) */
    char *prompt; /* !is_chat: the text (may hold NULs) */
    size_t prompt_len;
    srv_chat_msg *messages; /* is_chat: [n_messages], render with srv_chat_render */
    size_t n_messages;
    bool add_special_tokens;    /* default true for a prompt, false for messages (vLLM) */
    bool add_generation_prompt; /* chat form; default true */
} srv_tokenize_req;

/* {"model"?, "prompt": string | "messages": [...], "add_special_tokens"?: bool,
 * "add_generation_prompt"?: bool}; errors as srv_completion_req_parse. */
int srv_tokenize_req_parse(const char *body, size_t len, const srv_model_info *model,
                           srv_tokenize_req *req, srv_error *err);
void srv_tokenize_req_close(srv_tokenize_req *req);

typedef struct srv_detokenize_req {
    char *model;     /* or NULL */
    int32_t *tokens; /* [n_tokens] (may be 0), each in [0, n_vocab) */
    size_t n_tokens;
} srv_detokenize_req;

/* {"model"?, "tokens": [ids]}; errors as srv_completion_req_parse. */
int srv_detokenize_req_parse(const char *body, size_t len, const srv_model_info *model,
                             srv_detokenize_req *req, srv_error *err);
void srv_detokenize_req_close(srv_detokenize_req *req);

/* {"tokens": [...], "count": n, "max_model_len": N}; new reference, NULL when out of memory. */
json_t *srv_tokenize_response(const int32_t *tokens, size_t n_tokens, int32_t max_model_len);
/* {"prompt": text}; new reference, NULL when out of memory. */
json_t *srv_detokenize_response(const char *text, size_t len);

/* ---- Responses ---- */

/* What the response builders share: borrowed strings. */
typedef struct srv_resp_meta {
    const char *id;    /* "cmpl-..." / "chatcmpl-..." (srv_make_id) */
    const char *model; /* the served model's name */
    int64_t created;   /* unix seconds */
} srv_resp_meta;

/* Writes prefix + 32 random hex digits (getrandom) into out (cap bytes, >= strlen(prefix) + 33).
 * Returns 0, FQ_EINVAL (cap too small) or FQ_EIO. */
int srv_make_id(const char *prefix, char *out, size_t cap);

typedef enum { SRV_FINISH_NONE = 0, SRV_FINISH_STOP, SRV_FINISH_LENGTH } srv_finish;

/* "stop", "length", or NULL for SRV_FINISH_NONE. */
const char *srv_finish_str(srv_finish f);

typedef struct srv_top_logprob {
    const char *token; /* the token's bytes (any bytes; repaired for JSON) */
    size_t token_len;
    float logprob; /* -inf is written as SRV_LOGPROB_FLOOR */
} srv_top_logprob;

typedef struct srv_token_logprob {
    const char *token; /* the token's bytes */
    size_t token_len;
    float logprob;              /* NAN = null (the first token of an echoed prompt) */
    const srv_top_logprob *top; /* [n_top] alternatives, best first (borrowed) */
    size_t n_top;
    size_t text_offset; /* completions: code-point offset in the choice's text */
} srv_token_logprob;

typedef struct srv_usage {
    int64_t prompt_tokens;     /* over all prompts (each counted once, not per choice) */
    int64_t completion_tokens; /* over all choices */
} srv_usage;

/* One choice of a response or a stream chunk (borrowed pointers). */
typedef struct srv_choice {
    uint32_t index;
    const char *text; /* completions: the choice's text (or delta); chat: the message content
                         (or delta; NULL in a chunk = no "content" key) */
    size_t text_len;
    bool has_logprobs;                 /* false = "logprobs": null */
    const srv_token_logprob *logprobs; /* [n_logprobs] */
    size_t n_logprobs;
    srv_finish finish; /* SRV_FINISH_NONE = null */
} srv_choice;

/* {"id", "object": "text_completion", "created", "model", "choices": [{"index", "text",
 * "logprobs": null | {"tokens", "token_logprobs", "top_logprobs" (list of {token: logprob}
 * dicts; null where the token's logprob is null), "text_offset"}, "finish_reason"}],
 * "usage": {"prompt_tokens", "completion_tokens", "total_tokens"}}.
 * All builders: new reference, NULL when out of memory. */
json_t *srv_completion_response(const srv_resp_meta *meta, const srv_choice *choices,
                                size_t n_choices, const srv_usage *usage);

/* A completions stream chunk: the same object with one choice (the delta text, finish_reason
 * null until the choice's last chunk) and, when include_usage, "usage": null. */
json_t *srv_completion_chunk(const srv_resp_meta *meta, const srv_choice *choice,
                             bool include_usage);

/* The last chunk of a stream with include_usage: "choices": [] and the usage. chat selects the
 * object name ("chat.completion.chunk" or "text_completion"). */
json_t *srv_usage_chunk(const srv_resp_meta *meta, bool chat, const srv_usage *usage);

/* {"id", "object": "chat.completion", "created", "model", "choices": [{"index", "message":
 * {"role": "assistant", "content"}, "logprobs": null | {"content": [{"token", "logprob", "bytes",
 * "top_logprobs": [{"token", "logprob", "bytes"}]}]}, "finish_reason"}], "usage"}. */
json_t *srv_chat_response(const srv_resp_meta *meta, const srv_choice *choices, size_t n_choices,
                          const srv_usage *usage);

/* A chat stream chunk ("object": "chat.completion.chunk") with one choice: "delta" holds
 * "role": "assistant" when role is true and "content" when choice->text is not NULL; logprobs as
 * in srv_chat_response; "usage": null when include_usage. A choice's stream is: one chunk with
 * role and "" content, chunks with content, one chunk with an empty delta and the
 * finish_reason. */
json_t *srv_chat_chunk(const srv_resp_meta *meta, const srv_choice *choice, bool role,
                       bool include_usage);

/* {"object": "list", "data": [{"id", "object": "model", "created", "owned_by": "flexq",
 * "max_model_len"}]}. */
json_t *srv_models_response(const srv_model_info *models, size_t n_models);

#endif /* SRV_OPENAI_H */
