#!/bin/bash
# Configure Debian's OpenStack packages inside the booted container, once: the result is cached
# as a root file system, so later boots start configured. Runs as root inside the guest.
#
#   bake.sh GUEST_IP
#
# Keystone (fernet, MariaDB), Glance (file store), Placement, Nova API/conductor/scheduler and a
# nova-compute with the fake driver, Neutron's API server (ML2, no agents), Heat (API and engine,
# its stack domain), RabbitMQ. Service passwords are random, generated here, and stay inside this
# root; the admin password is replaced at every `up` (localcloud/machines/openstack.py).
set -euo pipefail
IP=${1:?usage: bake.sh GUEST_IP}
REGION=RegionOne
SECRETS=/root/openstack
mkdir -p -m 0700 "$SECRETS"

phase() { echo "bake-phase: $*"; }  # the host prints these as progress lines
pw() { python3 -c 'import secrets; print(secrets.token_hex(16))'; }
set_ini() { crudini --set "$@"; }
wait_http() {  # URL: until it answers at all (any HTTP status), up to 120 s
    for _ in $(seq 240); do
        if python3 - "$1" <<'PY'
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=2)
except urllib.error.HTTPError:
    pass
except OSError:
    sys.exit(1)
PY
        then return 0; fi
        sleep 0.5
    done
    echo "no answer from $1" >&2; return 1
}

SERVICES="keystone glance-api placement-api nova-api nova-conductor nova-scheduler neutron-api
          heat-api heat-engine"
# They started unconfigured at boot (and failed): stop them, and the ones we never run.
systemctl stop $SERVICES nova-compute-fake neutron-rpc-server nova-api-metadata 2>/dev/null || true
systemctl disable --now neutron-rpc-server nova-api-metadata 2>/dev/null || true

# -- MariaDB and RabbitMQ ---------------------------------------------------------------------
phase "MariaDB and RabbitMQ"
cat > /etc/mysql/mariadb.conf.d/99-openstack.cnf <<'EOF'
[mysqld]
bind-address = 127.0.0.1
max_connections = 500
innodb_buffer_pool_size = 128M
innodb_flush_log_at_trx_commit = 2
innodb_flush_method = fsync
character-set-server = utf8mb4
collation-server = utf8mb4_general_ci
EOF
systemctl restart mariadb
declare -A DBPW
for db in keystone glance placement nova_api nova nova_cell0 neutron heat; do
    user=${db%%_*}
    [ -n "${DBPW[$user]:-}" ] || DBPW[$user]=$(pw)
    mysql -e "CREATE DATABASE IF NOT EXISTS $db;
              CREATE USER IF NOT EXISTS '$user'@'127.0.0.1' IDENTIFIED BY '${DBPW[$user]}';
              ALTER USER '$user'@'127.0.0.1' IDENTIFIED BY '${DBPW[$user]}';
              GRANT ALL PRIVILEGES ON $db.* TO '$user'@'127.0.0.1';"
done
db_url() { echo "mysql+pymysql://$1:${DBPW[$1]}@127.0.0.1/$2?charset=utf8"; }

systemctl restart rabbitmq-server
RABBIT_PW=$(pw)
rabbitmqctl add_user openstack "$RABBIT_PW" >/dev/null 2>&1 || rabbitmqctl change_password openstack "$RABBIT_PW"
rabbitmqctl set_permissions openstack ".*" ".*" ".*" >/dev/null
TRANSPORT="rabbit://openstack:$RABBIT_PW@127.0.0.1:5672/"

# -- Keystone ---------------------------------------------------------------------------------
phase "Keystone"
KC=/etc/keystone/keystone.conf
set_ini $KC database connection "$(db_url keystone keystone)"
set_ini $KC token provider fernet
set_ini $KC DEFAULT log_file /var/log/keystone/keystone.log
su -s /bin/sh -c "keystone-manage db_sync" keystone
keystone-manage fernet_setup --keystone-user keystone --keystone-group keystone
keystone-manage credential_setup --keystone-user keystone --keystone-group keystone
ADMIN_PW=$(pw)
keystone-manage bootstrap --bootstrap-password "$ADMIN_PW" \
    --bootstrap-admin-url "http://$IP:5000/v3/" --bootstrap-internal-url "http://$IP:5000/v3/" \
    --bootstrap-public-url "http://$IP:5000/v3/" --bootstrap-region-id $REGION
systemctl enable keystone && systemctl restart keystone
wait_http "http://$IP:5000/v3"

cat > $SECRETS/admin-openrc <<EOF
export OS_AUTH_URL=http://$IP:5000/v3
export OS_IDENTITY_API_VERSION=3
export OS_REGION_NAME=$REGION
export OS_USERNAME=admin
export OS_PROJECT_NAME=admin
export OS_USER_DOMAIN_NAME=Default
export OS_PROJECT_DOMAIN_NAME=Default
export OS_PASSWORD=$ADMIN_PW
EOF
chmod 0600 $SECRETS/admin-openrc
# shellcheck source=/dev/null
. $SECRETS/admin-openrc

openstack project show service >/dev/null 2>&1 || openstack project create --domain default service >/dev/null
declare -A SVCPW
service_user() {  # NAME: a service user with the admin and service roles in project service
    SVCPW[$1]=$(pw)
    if openstack user show "$1" >/dev/null 2>&1; then
        openstack user set --password "${SVCPW[$1]}" "$1"
    else
        openstack user create --domain default --password "${SVCPW[$1]}" "$1" >/dev/null
    fi
    openstack role add --project service --user "$1" admin
}
openstack role show service >/dev/null 2>&1 || openstack role create service >/dev/null
endpoints() {  # NAME TYPE URL
    openstack service show "$2" >/dev/null 2>&1 || openstack service create --name "$1" "$2" >/dev/null
    for iface in public internal admin; do
        openstack endpoint create --region $REGION "$2" $iface "$3" >/dev/null
    done
}
authtoken() {  # CONF USER: the [keystone_authtoken] section
    set_ini "$1" keystone_authtoken www_authenticate_uri "http://$IP:5000"
    set_ini "$1" keystone_authtoken auth_url "http://$IP:5000"
    set_ini "$1" keystone_authtoken auth_type password
    set_ini "$1" keystone_authtoken project_domain_name Default
    set_ini "$1" keystone_authtoken user_domain_name Default
    set_ini "$1" keystone_authtoken project_name service
    set_ini "$1" keystone_authtoken username "$2"
    set_ini "$1" keystone_authtoken password "${SVCPW[$2]}"
    set_ini "$1" keystone_authtoken region_name $REGION
    crudini --del "$1" keystone_authtoken memcached_servers 2>/dev/null || true
}
service_auth() {  # CONF SECTION USER: credentials nova/neutron use to call each other
    set_ini "$1" "$2" auth_url "http://$IP:5000"
    set_ini "$1" "$2" auth_type password
    set_ini "$1" "$2" project_domain_name Default
    set_ini "$1" "$2" user_domain_name Default
    set_ini "$1" "$2" project_name service
    set_ini "$1" "$2" username "$3"
    set_ini "$1" "$2" password "${SVCPW[$3]}"
    set_ini "$1" "$2" region_name $REGION
}
for svc in glance placement nova neutron heat; do service_user $svc; done
openstack role add --project service --user nova service
openstack role add --project service --user neutron service
endpoints glance image "http://$IP:9292"
endpoints placement placement "http://$IP:8778"
endpoints nova compute "http://$IP:8774/v2.1"
endpoints neutron network "http://$IP:9696"
endpoints heat orchestration "http://$IP:8004/v1/%(project_id)s"

# -- Glance -----------------------------------------------------------------------------------
phase "Glance"
GC=/etc/glance/glance-api.conf
set_ini $GC database connection "$(db_url glance glance)"
authtoken $GC glance
set_ini $GC paste_deploy flavor keystone
set_ini $GC DEFAULT enabled_backends "file:file"
set_ini $GC glance_store default_backend file
set_ini $GC file filesystem_store_datadir /var/lib/glance/images/
set_ini $GC DEFAULT workers 1
mkdir -p /var/lib/glance/images && chown glance:glance /var/lib/glance/images
su -s /bin/sh -c "glance-manage db_sync" glance

# -- Placement --------------------------------------------------------------------------------
phase "Placement"
PC=/etc/placement/placement.conf
set_ini $PC placement_database connection "$(db_url placement placement)"
set_ini $PC api auth_strategy keystone
authtoken $PC placement
su -s /bin/sh -c "placement-manage db sync" placement

# -- Nova -------------------------------------------------------------------------------------
phase "Nova"
NC=/etc/nova/nova.conf
set_ini $NC DEFAULT transport_url "$TRANSPORT"
set_ini $NC DEFAULT my_ip "$IP"
set_ini $NC DEFAULT enabled_apis osapi_compute
set_ini $NC DEFAULT compute_driver fake.SmallFakeDriver
set_ini $NC DEFAULT host openstack
set_ini $NC DEFAULT osapi_compute_workers 1
set_ini $NC DEFAULT state_path /var/lib/nova
set_ini $NC DEFAULT log_dir /var/log/nova
set_ini $NC api_database connection "$(db_url nova nova_api)"
set_ini $NC database connection "$(db_url nova nova)"
set_ini $NC api auth_strategy keystone
authtoken $NC nova
service_auth $NC placement placement
service_auth $NC neutron neutron
set_ini $NC service_user send_service_user_token true
service_auth $NC service_user nova
set_ini $NC glance api_servers "http://$IP:9292"
set_ini $NC conductor workers 1
set_ini $NC scheduler workers 1
set_ini $NC scheduler discover_hosts_in_cells_interval 30
set_ini $NC vnc enabled false
set_ini $NC oslo_concurrency lock_path /var/lib/nova/tmp
su -s /bin/sh -c "nova-manage api_db sync" nova
su -s /bin/sh -c "nova-manage cell_v2 map_cell0" nova
su -s /bin/sh -c "nova-manage cell_v2 list_cells" nova | grep -q ' cell1 ' \
    || su -s /bin/sh -c "nova-manage cell_v2 create_cell --name=cell1" nova
su -s /bin/sh -c "nova-manage db sync" nova

# -- Neutron: the API server only (ML2, no agents: networks, subnets, routers; no data plane) -
phase "Neutron"
NEC=/etc/neutron/neutron.conf
ML2=/etc/neutron/plugins/ml2/ml2_conf.ini
set_ini $NEC DEFAULT core_plugin ml2
set_ini $NEC DEFAULT service_plugins router
set_ini $NEC DEFAULT transport_url "$TRANSPORT"
set_ini $NEC DEFAULT auth_strategy keystone
set_ini $NEC DEFAULT api_workers 1
set_ini $NEC DEFAULT rpc_workers 0
set_ini $NEC DEFAULT notify_nova_on_port_status_changes false
set_ini $NEC DEFAULT notify_nova_on_port_data_changes false
set_ini $NEC database connection "$(db_url neutron neutron)"
authtoken $NEC neutron
service_auth $NEC nova nova
set_ini $NEC oslo_concurrency lock_path /var/lib/neutron/tmp
set_ini $ML2 ml2 type_drivers flat,vlan,vxlan
set_ini $ML2 ml2 tenant_network_types vxlan
set_ini $ML2 ml2 mechanism_drivers ""
set_ini $ML2 ml2 extension_drivers port_security
set_ini $ML2 ml2_type_flat flat_networks public
set_ini $ML2 ml2_type_vxlan vni_ranges 1:1000
su -s /bin/sh -c "neutron-db-manage --config-file $NEC --config-file $ML2 upgrade head" neutron

# -- Heat: the API and one engine; stack users live in their own domain ----------------------
phase "Heat"
HC=/etc/heat/heat.conf
HEAT_DOMAIN_PW=$(pw)
openstack domain show heat >/dev/null 2>&1 \
    || openstack domain create --description "Heat's stack projects and users" heat >/dev/null
if openstack user show --domain heat heat_domain_admin >/dev/null 2>&1; then
    openstack user set --domain heat --password "$HEAT_DOMAIN_PW" heat_domain_admin
else
    openstack user create --domain heat --password "$HEAT_DOMAIN_PW" heat_domain_admin >/dev/null
fi
openstack role add --domain heat --user-domain heat --user heat_domain_admin admin
for role in heat_stack_owner heat_stack_user; do
    openstack role show $role >/dev/null 2>&1 || openstack role create $role >/dev/null
done
set_ini $HC database connection "$(db_url heat heat)"
set_ini $HC DEFAULT transport_url "$TRANSPORT"
set_ini $HC DEFAULT region_name_for_services $REGION
set_ini $HC DEFAULT heat_metadata_server_url "http://$IP:8000"
set_ini $HC DEFAULT heat_waitcondition_server_url "http://$IP:8000/v1/waitcondition"
set_ini $HC DEFAULT stack_domain_admin heat_domain_admin
set_ini $HC DEFAULT stack_domain_admin_password "$HEAT_DOMAIN_PW"
set_ini $HC DEFAULT stack_user_domain_name heat
set_ini $HC DEFAULT num_engine_workers 1
set_ini $HC DEFAULT log_dir /var/log/heat
set_ini $HC heat_api workers 1
authtoken $HC heat
set_ini $HC trustee auth_type password
set_ini $HC trustee auth_url "http://$IP:5000"
set_ini $HC trustee username heat
set_ini $HC trustee password "${SVCPW[heat]}"
set_ini $HC trustee user_domain_name Default
set_ini $HC clients_keystone auth_uri "http://$IP:5000"
su -s /bin/sh -c "heat-manage db_sync" heat

# -- uwsgi: Debian sizes the API servers for a big host (8-16 processes each, every one loading
# the whole app); on a small machine that is minutes of boot. Two each is plenty here.
phase "uwsgi sizing"
for ini in /etc/keystone/keystone-uwsgi.ini /etc/glance/glance-api-uwsgi.ini \
           /etc/placement/placement-api-uwsgi.ini /etc/nova/nova-api-uwsgi.ini \
           /etc/heat/heat-api-uwsgi.ini /etc/neutron/neutron-api-uwsgi.ini; do
    [ -f "$ini" ] && set_ini "$ini" uwsgi processes 2
done
# neutron runs on eventlet: with Debian's 32 uwsgi threads a greenlet can be resumed from another
# OS thread ("greenlet.error: cannot switch to a different thread") and that worker hangs for
# good (seen: a router update from the openstack_vm play waited ten minutes). One thread each.
set_ini /etc/neutron/neutron-api-uwsgi.ini uwsgi threads 1

# -- start everything, then what needs the APIs -----------------------------------------------
phase "starting the services"
install -m 0644 /root/openstack-bake/nova-compute-fake.service /etc/systemd/system/
systemctl daemon-reload
systemctl enable $SERVICES nova-compute-fake >/dev/null 2>&1
systemctl restart $SERVICES nova-compute-fake
for url in "http://$IP:9292" "http://$IP:8778" "http://$IP:8774" "http://$IP:9696" \
           "http://$IP:8004"; do
    wait_http "$url"
done

for _ in $(seq 120); do  # the fake compute registers its resource provider in placement
    openstack compute service list --service nova-compute -f value -c State 2>/dev/null \
        | grep -q up && break
    sleep 1
done
phase "cells, flavors, the public network, the handler project"
su -s /bin/sh -c "nova-manage cell_v2 discover_hosts --verbose" nova

openstack flavor show m1.tiny >/dev/null 2>&1 \
    || openstack flavor create --vcpus 1 --ram 512 --disk 1 --public m1.tiny >/dev/null
openstack flavor show m1.small >/dev/null 2>&1 \
    || openstack flavor create --vcpus 1 --ram 2048 --disk 20 --public m1.small >/dev/null
# An external network, as DevStack makes one, for routers' gateways.
openstack network show public >/dev/null 2>&1 || openstack network create --external \
    --provider-network-type flat --provider-physical-network public --share public >/dev/null
openstack subnet show public-subnet >/dev/null 2>&1 || openstack subnet create \
    --network public --subnet-range 172.24.4.0/24 --no-dhcp public-subnet >/dev/null

# The tenant: project and user (its password and application credential are made at `up`).
openstack project show handler >/dev/null 2>&1 \
    || openstack project create --domain default --description "openstack-handler" handler >/dev/null
openstack user show handler >/dev/null 2>&1 \
    || openstack user create --domain default --project handler --password "$(pw)" handler >/dev/null
openstack role show member >/dev/null 2>&1 || openstack role create member >/dev/null
openstack role add --project handler --user handler member
openstack role add --project handler --user handler heat_stack_owner
openstack quota set --instances 20 --cores 40 --ram 102400 handler

echo "baked: $IP"
