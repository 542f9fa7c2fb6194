-- attack: require of a standard library
app.interface{
  fn = function(x)
    return require('io')
  end,
  inputs = 'text',
  outputs = 'text',
}
