-- POST /api/v2/products: a new Idempotency-Key and sku on every request, so each one is a
-- first request (no replay) and creates a product. wrk args: <run token>.
local counter = 0
local token = "run"

function init(args)
  token = args[1] or token
end

function request()
  counter = counter + 1
  local key = token .. "-" .. counter
  local headers = {}
  for name, value in pairs(wrk.headers) do headers[name] = value end
  headers["Idempotency-Key"] = key
  headers["Content-Type"] = "application/json"
  local body = '{"sku":"B-' .. key .. '","name":"bench product","price":{"amount":1250,"currency":"EUR"}}'
  return wrk.format("POST", wrk.path, headers, body)
end
