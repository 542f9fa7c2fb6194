-- attack: replacing a library function
app.interface{
  fn = function(x)
    string.rep = function() return 'pwned' end
  end,
  inputs = 'text',
  outputs = 'text',
}
