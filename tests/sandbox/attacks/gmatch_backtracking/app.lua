-- attack: a backtracking gmatch
app.interface{
  fn = function(x)
    for m in (('a'):rep(5e4)):gmatch('.-.-.-b') do end
  end,
  inputs = 'text',
  outputs = 'text',
}
