-- attack: %p in string.format
app.interface{
  fn = function(x)
    return string.format('%p', {})
  end,
  inputs = 'text',
  outputs = 'text',
}
