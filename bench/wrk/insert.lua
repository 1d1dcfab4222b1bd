-- POST /insert of the baseline app: the same body every time (the baseline table has no
-- unique column).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"sku":"B-1","name":"bench product","price_minor":1250,"currency":"EUR"}'
