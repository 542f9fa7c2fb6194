-- attack: a backtracking pattern
app.interface{
  fn = function(x)
    return (('a'):rep(1e5)):find('.-.-.-.-b$')
  end,
  inputs = 'text',
  outputs = 'text',
}
