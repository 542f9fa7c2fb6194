-- attack: a looping table.sort comparator
app.interface{
  fn = function(x)
    table.sort({3, 2, 1, 5, 4}, function() while true do end end)
  end,
  inputs = 'text',
  outputs = 'text',
}
