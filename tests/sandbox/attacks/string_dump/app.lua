-- attack: load(string.dump(f))
app.interface{
  fn = function(x)
    return load(string.dump(function() end))
  end,
  inputs = 'text',
  outputs = 'text',
}
