-- Argo CD health of an adbm.io BackendService, read from the status the operator writes from
-- observation. Argo CD runs it with gopher-lua (Lua 5.1): nothing newer is used here.
-- Install it as `resource.customizations.health.adbm.io_BackendService` (see docs/gitops.md).
local hs = {}

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local generation = 0
if obj.metadata ~= nil and obj.metadata.generation ~= nil then
  generation = obj.metadata.generation
end
local status = obj.status
if status == nil or status.observedGeneration == nil or status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to observe generation " .. generation
  return hs
end

local paused = condition(status, "Paused")
local degraded = condition(status, "Degraded")
local ready = condition(status, "Ready")

if paused ~= nil and paused.status == "True" then
  hs.status = "Suspended"
  hs.message = paused.message
elseif degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = degraded.reason .. ": " .. degraded.message
elseif ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
elseif ready ~= nil and (ready.reason == "RollingOut" or ready.reason == "Pending") then
  hs.status = "Progressing"
  hs.message = ready.message
elseif ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = ready.reason .. ": " .. ready.message
else
  hs.status = "Progressing"
  hs.message = "no Ready condition yet"
end
return hs
