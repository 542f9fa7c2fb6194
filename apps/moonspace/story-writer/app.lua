local llm = model("nickypro/tinyllama-15M")

app.interface{
  title = "Story writer",
  fn = function(prompt, temperature, top_p, max_tokens)
    local story = prompt
    local opts = { max_new_tokens = math.floor(max_tokens), temperature = temperature, top_p = top_p }
    local n = 0
    for piece in llm:generate(prompt, opts) do
      story = story .. piece
      n = n + 1
      progress(n, opts.max_new_tokens, "tokens")
      coroutine.yield(story)
    end
    return story
  end,
  inputs = {
    ui.textbox{label = "Beginning of the story", value = "Once upon a time", lines = 2},
    ui.slider{label = "Temperature", minimum = 0, maximum = 1.5, value = 0.8, step = 0.05},
    ui.slider{label = "Top-p", minimum = 0.05, maximum = 1, value = 0.9, step = 0.05},
    ui.slider{label = "Max new tokens", minimum = 16, maximum = 512, value = 200, step = 8},
  },
  outputs = ui.textbox{label = "Story", lines = 10},
  examples = {
    {"Once upon a time", 0.8, 0.9, 200},
    {"Lily and her dog found a big red box.", 0, 1, 120},
  },
}
