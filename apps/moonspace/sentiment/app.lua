local clf = model("distilbert/distilbert-base-uncased-finetuned-sst-2-english")

app.interface{
  fn = function(text)
    local scores = clf:classify(text)
    local confidences = {}
    for i, s in ipairs(scores) do confidences[i] = { label = s.label, confidence = s.score } end
    return { label = scores[1].label, confidences = confidences }
  end,
  inputs = { ui.textbox{label = "Text", lines = 3, placeholder = "I loved this film!"} },
  outputs = ui.label{label = "Sentiment", num_top_classes = 2},
  examples = { {"I loved this film, the actors were wonderful."}, {"The food was cold and the service slow."} },
}
