local llm = model("HuggingFaceTB/SmolLM2-135M-Instruct")

app.interface{
  api_name = "chat",
  fn = function(message, history, system, temperature)
    history = history or {}
    local messages = {}
    if system ~= "" then messages[1] = { role = "system", content = system } end
    for _, m in ipairs(history) do messages[#messages + 1] = { role = m.role, content = m.content } end
    messages[#messages + 1] = { role = "user", content = message }

    history[#history + 1] = { role = "user", content = message }
    local reply = { role = "assistant", content = "" }
    history[#history + 1] = reply
    for piece in llm:chat(messages, { max_new_tokens = 256, temperature = temperature, top_p = 0.9 }) do
      reply.content = reply.content .. piece
      coroutine.yield("", history)
    end
    return "", history
  end,
  inputs = {
    ui.textbox{label = "Message", placeholder = "Ask me anything..."},
    ui.chatbot{label = "SmolLM2", type = "messages"},
    ui.textbox{label = "System prompt", value = "You are a helpful, concise assistant."},
    ui.slider{label = "Temperature", minimum = 0, maximum = 1.5, value = 0.3, step = 0.05},
  },
  outputs = { ui.textbox{label = "Message"}, ui.chatbot{label = "SmolLM2", type = "messages"} },
  examples = { {"What is the capital of France?"}, {"Write a haiku about the moon."} },
}
