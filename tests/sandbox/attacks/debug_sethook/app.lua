-- attack: removing the hook with debug.sethook
app.interface{
  fn = function(x)
    debug.sethook() while true do end
  end,
  inputs = 'text',
  outputs = 'text',
}
