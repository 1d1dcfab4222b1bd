-- PATCH /api/v2/products/{id} with If-Match: each request takes a product no request is
-- changing, with the ETag its last response returned, so none is refused as stale.
-- wrk args: <run token> <file of "id version" lines> <path prefix, e.g. /api/v2/products/>.
local counter = 0
local token = "run"
local prefix = "/api/v2/products/"
local ready = {}

function init(args)
  token = args[1] or token
  prefix = args[3] or prefix
  for line in io.lines(args[2]) do
    local id, version = line:match("^(%S+) (%d+)$")
    if id then ready[#ready + 1] = {id, version} end
  end
end

function request()
  counter = counter + 1
  local item = table.remove(ready, 1)
  if item == nil then
    -- Every product is in flight or lost to an error: wrk has more connections than products.
    error("patch.lua: no product left to change; seed more products")
  end
  local headers = {}
  for name, value in pairs(wrk.headers) do headers[name] = value end
  headers["Idempotency-Key"] = token .. "-" .. counter
  headers["If-Match"] = '"' .. item[2] .. '"'
  headers["Content-Type"] = "application/json"
  local body = '{"name":"bench change ' .. counter .. '"}'
  return wrk.format("PATCH", prefix .. item[1], headers, body)
end

function response(status, headers, body)
  if status == 200 then
    local id = body:match('"id":"([0-9a-f-]+)"')
    local version = (headers["ETag"] or headers["etag"] or ""):match("(%d+)")
    if id and version then ready[#ready + 1] = {id, version} end
  end
end
