app.interface{
  fn = function(name, intensity)
    return "Hello, " .. name .. ("!"):rep(intensity)
  end,
  inputs = { "text", ui.slider{minimum = 1, maximum = 10, value = 2, step = 1, label = "Intensity"} },
  outputs = "text",
  examples = { {"World", 3} },
}
