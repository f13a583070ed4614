/*
 * idsync's own roles/onDelete-roles.js, for the role type of PingIDM's default
 * managed.json: a role granted to anyone is not deleted. The delete is refused with
 * 409, as PingIDM refuses it; take the role from its members first.
 */
var granted = openidm.read(resourceName, null, ["members"]);
if (granted && granted.members && granted.members.length > 0) {
    throw {"code": 409, "message": "Cannot delete a role that is currently granted"};
}
