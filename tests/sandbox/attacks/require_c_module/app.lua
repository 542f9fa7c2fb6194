-- attack: require of a C module
app.interface{
  fn = function(x)
    return require('socket')
  end,
  inputs = 'text',
  outputs = 'text',
}
