-- words.lua: small text helpers shared by the endpoints of app.lua
local M = {}

function M.split(text)
  local words = {}
  for w in text:gmatch("[%w']+") do words[#words + 1] = w:lower() end
  return words
end

function M.title(text)
  return (text:gsub("(%a)([%w']*)", function(first, rest) return first:upper() .. rest:lower() end))
end

function M.reverse_utf8(text)
  local chars = {}
  for _, c in utf8.codes(text) do table.insert(chars, 1, utf8.char(c)) end
  return table.concat(chars)
end

M.positive = { good = true, great = true, love = true, happy = true, nice = true, wonderful = true,
  excellent = true, fun = true, best = true, like = true, awesome = true, kind = true }
M.negative = { bad = true, sad = true, hate = true, awful = true, terrible = true, worst = true,
  angry = true, boring = true, ugly = true, poor = true, horrible = true, mean = true }

return M
