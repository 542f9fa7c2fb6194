-- attack: a backtracking gsub
app.interface{
  fn = function(x)
    return (('a'):rep(5e4)):gsub('.-.-.-b', '')
  end,
  inputs = 'text',
  outputs = 'text',
}
