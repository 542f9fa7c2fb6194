local encoder = model("sentence-transformers/all-MiniLM-L6-v2")

local function dot(a, b)
  local s = 0
  for i = 1, #a do s = s + a[i] * b[i] end
  return s
end

app.interface{
  fn = function(source, candidates)
    local v = encoder:embed(source)
    local scores = {}
    for line in candidates:gmatch("[^\n]+") do
      local text = line:match("^%s*(.-)%s*$")
      if text ~= "" then scores[#scores + 1] = { label = text, confidence = dot(v, encoder:embed(text)) } end
    end
    if #scores == 0 then error("Give at least one sentence to compare, one per line.") end
    table.sort(scores, function(a, b) return a.confidence > b.confidence end)
    return { label = scores[1].label, confidences = scores }
  end,
  inputs = {
    ui.textbox{label = "Source sentence", value = "A man is playing a guitar."},
    ui.textbox{label = "Sentences to compare (one per line)", lines = 5,
               value = "Someone plays an instrument.\nA woman is reading a book.\nThe guitarist is on stage."},
  },
  outputs = ui.label{label = "Similarity"},
  examples = { {"The cat sits on the mat.", "A cat is sitting on a rug.\nDogs are running in the park.\nIt is raining."} },
}
