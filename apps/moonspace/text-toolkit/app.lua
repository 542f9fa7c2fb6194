local words = require "words"

app.interface{
  api_name = "stats",
  title = "Statistics",
  fn = function(text)
    local list = words.split(text)
    local freq, top = {}, {}
    for _, w in ipairs(list) do freq[w] = (freq[w] or 0) + 1 end
    for w, n in pairs(freq) do top[#top + 1] = { word = w, count = n } end
    table.sort(top, function(a, b) return a.count > b.count or (a.count == b.count and a.word < b.word) end)
    while #top > 5 do table.remove(top) end
    local _, lines = text:gsub("\n", "")
    return { characters = utf8.len(text) or #text, bytes = #text, words = #list,
             lines = #text > 0 and lines + 1 or 0, top_words = top }
  end,
  inputs = { ui.textbox{label = "Text", lines = 4} },
  outputs = ui.json{label = "Statistics"},
  examples = { {"the cat sat on the mat\nthe end"} },
}

app.interface{
  api_name = "transform",
  title = "Transform",
  fn = function(text, mode)
    if mode == "upper" then return text:upper()
    elseif mode == "lower" then return text:lower()
    elseif mode == "title" then return words.title(text)
    else return words.reverse_utf8(text) end
  end,
  inputs = { ui.textbox{label = "Text"},
             ui.dropdown{choices = {"upper", "lower", "title", "reverse"}, value = "upper", label = "Mode"} },
  outputs = ui.textbox{label = "Result"},
  examples = { {"hello moonspace", "title"}, {"été à Paris", "reverse"} },
}

app.interface{
  api_name = "vowels",
  title = "Vowels",
  fn = function(text)
    local spans, run, run_is_vowel = {}, {}, nil
    local function flush()
      if #run > 0 then spans[#spans + 1] = { token = table.concat(run), class_or_confidence = run_is_vowel and "vowel" or nil } end
      run = {}
    end
    for _, c in utf8.codes(text) do
      local ch = utf8.char(c)
      local v = ch:lower():find("^[aeiouy]$") ~= nil
      if v ~= run_is_vowel then flush(); run_is_vowel = v end
      run[#run + 1] = ch
    end
    flush()
    return spans
  end,
  inputs = { ui.textbox{label = "Text"} },
  outputs = ui.highlightedtext{label = "Vowels", color_map = { vowel = "#f59e0b" }},
  examples = { {"moonspace runs Lua apps"} },
}

app.interface{
  api_name = "mood",
  title = "Mood",
  description = "Counts words from two small lists; a toy, not a model (see the sentiment app for a real one).",
  fn = function(text)
    local pos, neg = 1, 1 -- add-one smoothing
    for _, w in ipairs(words.split(text)) do
      if words.positive[w] then pos = pos + 1 end
      if words.negative[w] then neg = neg + 1 end
    end
    local p = pos / (pos + neg)
    local label = p > 0.5 and "positive" or (p < 0.5 and "negative" or "neutral")
    return { label = label, confidences = {
      { label = "positive", confidence = p }, { label = "negative", confidence = 1 - p } } }
  end,
  inputs = { ui.textbox{label = "Text"} },
  outputs = ui.label{label = "Mood"},
  examples = { {"what a wonderful, happy day"}, {"this is the worst, most boring film"} },
}
