local reflections = { i = "you", me = "you", my = "your", am = "are", you = "I", your = "my", mine = "yours" }

local rules = {
  { "my name is (%w+)", function(m, mem) mem.name = m; return "Nice to meet you, " .. m .. ". How are you feeling today?" end },
  { "i feel (.+)", function(m) return "Why do you feel " .. m .. "?" end },
  { "i am (.+)", function(m) return "How long have you been " .. m .. "?" end },
  { "i need (.+)", function(m) return "Why do you need " .. m .. "?" end },
  { "because (.+)", function(m) return "Is that the real reason?" end },
  { "what is my name", function(_, mem)
      return mem.name and ("You told me your name is " .. mem.name .. ".") or "You have not told me your name yet." end },
  { "hello", function(_, mem) return "Hello" .. (mem.name and (", " .. mem.name) or "") .. ". What is on your mind?" end },
}

-- A pattern that matches letters in either case, so captures keep the user's spelling.
local function caseless(pattern)
  return (pattern:gsub("%%?%a", function(c)
    if #c == 2 then return c end
    return "[" .. c:lower() .. c:upper() .. "]"
  end))
end

local function reflect(text)
  return (text:gsub("%w+", function(w) return reflections[w:lower()] or w end))
end

local function reply(text, mem)
  local said = text:gsub("[%.!?]+$", "")
  for _, rule in ipairs(rules) do
    local m = said:match(caseless(rule[1]))
    if m then return rule[2](reflect(m), mem) end
  end
  mem.turns = (mem.turns or 0) + 1
  local fallbacks = { "Please tell me more.", "How does that make you feel?", "Why do you say that?",
                      "I see. Go on." }
  return fallbacks[(mem.turns - 1) % #fallbacks + 1]
end

app.interface{
  api_name = "chat",
  fn = function(message, history, memory)
    history = history or {}
    memory = memory or {}
    history[#history + 1] = { role = "user", content = message }
    local answer = reply(message, memory)
    local bot = { role = "assistant", content = "" }
    history[#history + 1] = bot
    for word in answer:gmatch("%S+%s*") do
      bot.content = bot.content .. word
      coroutine.yield("", history, memory)
    end
    return "", history, memory
  end,
  inputs = { ui.textbox{label = "Message", placeholder = "Say something..."}, ui.chatbot{label = "Eliza"}, ui.state{} },
  outputs = { ui.textbox{label = "Message"}, ui.chatbot{label = "Eliza"}, ui.state{} },
  examples = { {"Hello, my name is Ada"}, {"I feel a little tired"} },
}
