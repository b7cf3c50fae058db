// Every admin API route of the server, for the matrices (isolation, bad input, OpenAPI): each with
// its method, a path template ({id} a tenant id, {key_id} a key id, {provider} a provider name,
// {target} a breaker key), its access (admin/api.h TG_ADM_*: read|write, operator-only, tenant-scoped)
// and an example body of a valid request. Kept in step with the route tables of admin/*.c
// (admin/router.c lists them); admin_core.test.mjs checks that every entry answers something other
// than 404/405 for an operator.
export const ROUTES = [
    { name: 'breakers.list', method: 'GET', path: '/admin/v1/breakers', access: ['read'] },
    { name: 'breakers.reset', method: 'POST', path: '/admin/v1/breakers/{target}/reset', access: ['write', 'operator'] },
    { name: 'failover_events.list', method: 'GET', path: '/admin/v1/failover-events', access: ['read'] },
    { name: 'tenants.create', method: 'POST', path: '/admin/v1/tenants', access: ['write', 'operator'], body: { name: 'example', zero_retention: false, initial_credits: 1000000 } },
    { name: 'tenants.list', method: 'GET', path: '/admin/v1/tenants', access: ['read'] },
    { name: 'tenants.get', method: 'GET', path: '/admin/v1/tenants/{id}', access: ['read', 'tenant'] },
    { name: 'tenants.patch', method: 'PATCH', path: '/admin/v1/tenants/{id}', access: ['write', 'tenant'], body: { zero_retention: false } },
    { name: 'tenants.suspend', method: 'POST', path: '/admin/v1/tenants/{id}/suspend', access: ['write', 'operator', 'tenant'] },
    { name: 'tenants.resume', method: 'POST', path: '/admin/v1/tenants/{id}/resume', access: ['write', 'operator', 'tenant'] },
    { name: 'keys.create', method: 'POST', path: '/admin/v1/tenants/{id}/keys', access: ['write', 'tenant'], body: { label: 'example', allowed_models: ['openai-chat'] } },
    { name: 'keys.list', method: 'GET', path: '/admin/v1/tenants/{id}/keys', access: ['read', 'tenant'] },
    { name: 'keys.get', method: 'GET', path: '/admin/v1/tenants/{id}/keys/{key_id}', access: ['read', 'tenant'] },
    { name: 'keys.revoke', method: 'DELETE', path: '/admin/v1/tenants/{id}/keys/{key_id}', access: ['write', 'tenant'] },
    { name: 'keys.rotate', method: 'POST', path: '/admin/v1/tenants/{id}/keys/{key_id}/rotate', access: ['write', 'tenant'], body: { grace_s: 3600 } },
    { name: 'provider_keys.list', method: 'GET', path: '/admin/v1/tenants/{id}/provider-keys', access: ['read', 'tenant'] },
    { name: 'provider_keys.get', method: 'GET', path: '/admin/v1/tenants/{id}/provider-keys/{provider}', access: ['read', 'tenant'] },
    { name: 'provider_keys.put', method: 'PUT', path: '/admin/v1/tenants/{id}/provider-keys/{provider}', access: ['write', 'tenant'], body: { api_key: 'sk-example' } },
    { name: 'provider_keys.delete', method: 'DELETE', path: '/admin/v1/tenants/{id}/provider-keys/{provider}', access: ['write', 'tenant'] },
    { name: 'policy.get', method: 'GET', path: '/admin/v1/tenants/{id}/policy', access: ['read', 'tenant'] },
    { name: 'policy.put', method: 'PUT', path: '/admin/v1/tenants/{id}/policy', access: ['write', 'tenant'], body: { max_tokens: 1024 } },
    { name: 'key_policy.get', method: 'GET', path: '/admin/v1/tenants/{id}/keys/{key_id}/policy', access: ['read', 'tenant'] },
    { name: 'key_policy.put', method: 'PUT', path: '/admin/v1/tenants/{id}/keys/{key_id}/policy', access: ['write', 'tenant'], body: { max_tokens: 512 } },
    { name: 'audit.list', method: 'GET', path: '/admin/v1/audit', access: ['read', 'operator'] },
    // money and catalog (admin/wallet_api.c, usage_api.c, catalog_api.c, chains_api.c); {name} a chain name;
    // `headers`: what a valid request also sends
    { name: 'wallet.get', method: 'GET', path: '/admin/v1/tenants/{id}/wallet', access: ['read', 'tenant'] },
    { name: 'wallet.top_up', method: 'POST', path: '/admin/v1/tenants/{id}/wallet/top-ups', access: ['write', 'operator', 'tenant'], body: { amount: 1000000, note: 'example' }, headers: { 'idempotency-key': 'example-top-up-1' } },
    { name: 'wallet.ledger', method: 'GET', path: '/admin/v1/tenants/{id}/wallet/ledger', access: ['read', 'tenant'] },
    { name: 'usage.list', method: 'GET', path: '/admin/v1/tenants/{id}/usage', access: ['read', 'tenant'] },
    { name: 'usage.summary', method: 'GET', path: '/admin/v1/tenants/{id}/usage/summary', access: ['read', 'tenant'] },
    { name: 'models.list', method: 'GET', path: '/admin/v1/models', access: ['read'] },
    { name: 'prices.list', method: 'GET', path: '/admin/v1/prices', access: ['read', 'operator'] },
    { name: 'prices.create', method: 'POST', path: '/admin/v1/prices', access: ['write', 'operator'], body: { model: 'openai-chat', input_per_mtok: 1000000, output_per_mtok: 2000000 } },
    { name: 'chains.list', method: 'GET', path: '/admin/v1/tenants/{id}/chains', access: ['read', 'tenant'] },
    { name: 'chains.get', method: 'GET', path: '/admin/v1/tenants/{id}/chains/{name}', access: ['read', 'tenant'] },
    { name: 'chains.put', method: 'PUT', path: '/admin/v1/tenants/{id}/chains/{name}', access: ['write', 'tenant'], body: { targets: ['openai-chat'] } },
    { name: 'chains.delete', method: 'DELETE', path: '/admin/v1/tenants/{id}/chains/{name}', access: ['write', 'tenant'] },
];

/** The path of a route with its parameters filled in: params = {id, key_id, provider, target, name}. */
export function fill(route, params) {
    return route.path.replace(/\{(\w+)\}/g, (_, k) => {
        if (params[k] === undefined) throw new Error(`route ${route.name} needs ${k}`);
        return encodeURIComponent(String(params[k]));
    });
}
