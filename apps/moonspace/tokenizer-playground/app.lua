local tokenizers = {
  ["GPT-2"] = model("openai-community/gpt2"),
  ["BERT"] = model("google-bert/bert-base-uncased"),
  ["Llama"] = model("hf-internal-testing/llama-tokenizer"),
}

app.interface{
  fn = function(text, which)
    local tok = tokenizers[which]
    local ids = tok:tokenize(text)
    local spans = {}
    for i, id in ipairs(ids) do
      -- each token on its own; the class alternates so neighbours get different colours
      spans[i] = { token = tok:detokenize({ id }), class_or_confidence = (i % 2 == 1) and "odd" or "even" }
    end
    return spans, { tokenizer = which, count = #ids, ids = ids }
  end,
  inputs = {
    ui.textbox{label = "Text", lines = 3, value = "Tokenizers split text like unbelievably into pieces."},
    ui.radio{label = "Tokenizer", choices = {"GPT-2", "BERT", "Llama"}, value = "GPT-2"},
  },
  outputs = { ui.highlightedtext{label = "Tokens", color_map = { odd = "#60a5fa", even = "#f472b6" }},
              ui.json{label = "Ids"} },
  examples = { {"Hello, world! Ça va?", "GPT-2"}, {"Unbelievable tokenization", "BERT"}, {"Once upon a time", "Llama"} },
}
