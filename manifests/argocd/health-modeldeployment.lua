-- Argo CD health check for modeldeploy.io/ModelDeployment (the one source; argocd-cm-health.yaml embeds it).
-- It reads only the object's own status, with the same rules as modeldeploy.controller.metrics.health_state:
--   no status or conditions, or observedGeneration behind metadata.generation -> Progressing
--   Stalled=True or Degraded=True -> Degraded   Reconciling=True -> Progressing
--   Ready=True -> Healthy (Suspended when scaled to zero)   otherwise -> Progressing
-- Written for Argo CD's gopher-lua (Lua 5.1): no goto, no integer operators.
local hs = {}

local function describe(c)
  local reason = c.reason or ""
  local message = c.message or ""
  if reason ~= "" and message ~= "" then
    return reason .. ": " .. message
  end
  if reason ~= "" then
    return reason
  end
  return message
end

local function find(conditions, type, status)
  for _, c in ipairs(conditions) do
    if c.type == type and (status == nil or c.status == status) then
      return c
    end
  end
  return nil
end

if obj.status == nil or obj.status.conditions == nil or #obj.status.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for the modeldeploy operator to report status"
  return hs
end

local conditions = obj.status.conditions
local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation) ..
    " (observed " .. (observed ~= nil and tostring(observed) or "none") .. ")"
  return hs
end

local c = find(conditions, "Stalled", "True") or find(conditions, "Degraded", "True")
if c ~= nil then
  hs.status = "Degraded"
  hs.message = describe(c)
  return hs
end

c = find(conditions, "Reconciling", "True")
if c ~= nil then
  hs.status = "Progressing"
  hs.message = describe(c)
  return hs
end

c = find(conditions, "Ready", "True")
if c ~= nil then
  if c.reason == "ScaledToZero" then
    hs.status = "Suspended"
  else
    hs.status = "Healthy"
  end
  hs.message = describe(c)
  return hs
end

c = find(conditions, "Ready", nil)
hs.status = "Progressing"
if c ~= nil then
  hs.message = describe(c)
else
  hs.message = "Waiting for the Ready condition"
end
return hs
