-- Waits about `ms` milliseconds of CPU time: Lua apps have no sleep.
local function pause(ms)
  local stop = os.clock() + ms / 1000
  while os.clock() < stop do end
end

app.interface{
  api_name = "typewriter",
  title = "Typewriter",
  fn = function(text, delay_ms)
    local out, n, total = "", 0, select(2, text:gsub("%S+", ""))
    for word, space in text:gmatch("(%S+)(%s*)") do
      out = out .. word .. space
      n = n + 1
      progress(n, total, "typing")
      coroutine.yield(out)
      pause(delay_ms)
    end
    return out
  end,
  inputs = { ui.textbox{label = "Text", lines = 3},
             ui.slider{minimum = 0, maximum = 500, value = 80, step = 10, label = "Delay per word (ms)"} },
  outputs = ui.textbox{label = "Typed", lines = 3},
  examples = { {"Once upon a time, a small Lua app streamed its answer to a browser, one word at a time.", 120} },
}

app.interface{
  api_name = "primes",
  title = "Primes",
  fn = function(limit)
    limit = math.floor(limit)
    local composite, found, chunk = {}, {}, math.max(1000, limit // 20)
    for lo = 2, limit, chunk do
      local hi = math.min(limit, lo + chunk - 1)
      for i = lo, hi do
        if not composite[i] then
          found[#found + 1] = i
          for j = i * i, limit, i do composite[j] = true end
        end
      end
      progress(hi, limit, "sieving")
      coroutine.yield(("%d primes up to %d; the last is %d"):format(#found, hi, found[#found] or 0))
    end
    return ("%d primes up to %d; the largest is %d"):format(#found, limit, found[#found] or 0)
  end,
  inputs = { ui.number{label = "Up to", value = 200000, minimum = 2, maximum = 5000000, precision = 0} },
  outputs = ui.textbox{label = "Primes"},
  examples = { {100000}, {2000000} },
}

app.interface{
  api_name = "countdown",
  title = "Countdown (fails)",
  fn = function(from)
    for i = math.floor(from), 1, -1 do
      coroutine.yield(("%d..."):format(i))
      pause(100)
    end
    error("Liftoff failed: this endpoint always ends in an error, on purpose.")
  end,
  inputs = { ui.slider{minimum = 1, maximum = 10, value = 3, step = 1, label = "From"} },
  outputs = ui.textbox{label = "Countdown"},
  examples = { {3} },
}
