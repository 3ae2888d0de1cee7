"""Foundation schema: users, nodes, keys, status history, rentals, ports, ledger, idempotency.

Revision ID: 0001
Revises:
Create Date: 2026-11-27 06:46:50.544849
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('users',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('clerk_id', sa.String(length=255), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('role', sa.Enum('rent', 'lease', 'both', name='role'), server_default='both', nullable=False),
    sa.Column('balance', sa.Numeric(precision=18, scale=4), server_default=sa.text('0'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('balance >= 0', name=op.f('ck_users_balance_non_negative')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('clerk_id', name=op.f('uq_users_clerk_id')),
    sa.UniqueConstraint('email', name=op.f('uq_users_email'))
    )
    op.create_table('host_nodes',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('owner_id', sa.UUID(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('specs', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('pricing', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('location', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('status', sa.Enum('online', 'offline', 'busy', 'maintenance', name='node_status'), server_default='offline', nullable=False),
    sa.Column('maintenance', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('draining', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('verified', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('detected_specs', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status_changed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('gpu_model', sa.Text(), sa.Computed("(specs->>'gpu_model')", persisted=True), nullable=False),
    sa.Column('gpu_count', sa.Integer(), sa.Computed("((specs->>'gpu_count')::integer)", persisted=True), nullable=False),
    sa.Column('gpu_vram_gb', sa.Numeric(precision=10, scale=2), sa.Computed("((specs->>'gpu_vram_gb')::numeric(10,2))", persisted=True), nullable=False),
    sa.Column('tflops', sa.Numeric(precision=12, scale=2), sa.Computed("((specs->>'tflops')::numeric(12,2))", persisted=True), nullable=False),
    sa.Column('cpu_cores', sa.Integer(), sa.Computed("((specs->>'cpu_cores')::integer)", persisted=True), nullable=False),
    sa.Column('ram_gb', sa.Numeric(precision=10, scale=2), sa.Computed("((specs->>'ram_gb')::numeric(10,2))", persisted=True), nullable=False),
    sa.Column('disk_gb', sa.Numeric(precision=12, scale=2), sa.Computed("((specs->>'disk_gb')::numeric(12,2))", persisted=True), nullable=False),
    sa.Column('hourly_rate', sa.Numeric(precision=18, scale=4), sa.Computed("((pricing->>'hourly_rate')::numeric(18,4))", persisted=True), nullable=False),
    sa.Column('auto_match_market', sa.Boolean(), sa.Computed("(coalesce((pricing->>'auto_match_market')::boolean, false))", persisted=True), nullable=False),
    sa.Column('country', sa.String(length=2), sa.Computed("(upper(location->>'country'))", persisted=True), nullable=False),
    sa.Column('lat', sa.Numeric(precision=9, scale=6), sa.Computed("((location->>'lat')::numeric(9,6))", persisted=True), nullable=True),
    sa.Column('lng', sa.Numeric(precision=9, scale=6), sa.Computed("((location->>'lng')::numeric(9,6))", persisted=True), nullable=True),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_host_nodes_owner_id_users'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_host_nodes'))
    )
    op.create_index(op.f('ix_host_nodes_owner_id'), 'host_nodes', ['owner_id'], unique=False)
    op.create_table('idempotency_keys',
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('endpoint', sa.String(length=255), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('response', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_idempotency_keys_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'key', name=op.f('pk_idempotency_keys'))
    )
    op.create_table('node_api_keys',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('node_id', sa.UUID(), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['node_id'], ['host_nodes.id'], name=op.f('fk_node_api_keys_node_id_host_nodes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_node_api_keys')),
    sa.UniqueConstraint('prefix', name=op.f('uq_node_api_keys_prefix'))
    )
    op.create_index(op.f('ix_node_api_keys_node_id'), 'node_api_keys', ['node_id'], unique=False)
    op.create_table('node_status_events',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('node_id', sa.UUID(), nullable=False),
    sa.Column('status', sa.Enum('online', 'offline', 'busy', 'maintenance', name='node_status'), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['node_id'], ['host_nodes.id'], name=op.f('fk_node_status_events_node_id_host_nodes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_node_status_events'))
    )
    op.create_index('ix_node_status_events_node_at', 'node_status_events', ['node_id', 'at'], unique=False)
    op.create_table('rentals',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('renter_id', sa.UUID(), nullable=False),
    sa.Column('node_id', sa.UUID(), nullable=False),
    sa.Column('status', sa.Enum('pending', 'active', 'completed', 'cancelled', name='rental_status'), server_default='pending', nullable=False),
    sa.Column('image', sa.String(length=512), nullable=False),
    sa.Column('command', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('env', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('ports', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('cost_per_hour', sa.Numeric(precision=18, scale=4), nullable=False),
    sa.Column('start_time', sa.DateTime(timezone=True), nullable=True),
    sa.Column('end_time', sa.DateTime(timezone=True), nullable=True),
    sa.Column('container_id', sa.String(length=128), nullable=True),
    sa.Column('connection_info', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('failure_reason', sa.Text(), nullable=True),
    sa.Column('billed_minutes', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('billed_amount', sa.Numeric(precision=18, scale=4), server_default=sa.text('0'), nullable=False),
    sa.Column('stop_requested_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['node_id'], ['host_nodes.id'], name=op.f('fk_rentals_node_id_host_nodes'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['renter_id'], ['users.id'], name=op.f('fk_rentals_renter_id_users'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rentals'))
    )
    op.create_index(op.f('ix_rentals_node_id'), 'rentals', ['node_id'], unique=False)
    op.create_index('ix_rentals_renter_created', 'rentals', ['renter_id', 'created_at'], unique=False)
    op.create_index('ix_rentals_status', 'rentals', ['status'], unique=False)
    op.create_index('uq_rentals_one_live_per_node', 'rentals', ['node_id'], unique=True, postgresql_where=sa.text("status IN ('pending', 'active')"))
    op.create_table('port_allocations',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('port', sa.Integer(), nullable=False),
    sa.Column('container_port', sa.Integer(), nullable=False),
    sa.Column('node_id', sa.UUID(), nullable=False),
    sa.Column('rental_id', sa.UUID(), nullable=False),
    sa.Column('allocated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('released_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('proxy_name', sa.String(length=200), nullable=True),
    sa.Column('proxy_opened_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('proxy_closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['node_id'], ['host_nodes.id'], name=op.f('fk_port_allocations_node_id_host_nodes'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['rental_id'], ['rentals.id'], name=op.f('fk_port_allocations_rental_id_rentals'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_port_allocations'))
    )
    op.create_index('ix_port_allocations_rental', 'port_allocations', ['rental_id'], unique=False)
    op.create_index('uq_port_allocations_live_port', 'port_allocations', ['port'], unique=True, postgresql_where=sa.text('released_at IS NULL'))
    op.create_table('transactions',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('amount', sa.Numeric(precision=18, scale=4), nullable=False),
    sa.Column('type', sa.Enum('credit', 'debit', name='transaction_type'), nullable=False),
    sa.Column('reference_id', sa.String(length=255), nullable=True),
    sa.Column('rental_id', sa.UUID(), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('amount > 0', name=op.f('ck_transactions_amount_positive')),
    sa.ForeignKeyConstraint(['rental_id'], ['rentals.id'], name=op.f('fk_transactions_rental_id_rentals'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_transactions_user_id_users'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_transactions'))
    )
    op.create_index('ix_transactions_user_created', 'transactions', ['user_id', 'created_at', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_transactions_user_created', table_name='transactions')
    op.drop_table('transactions')
    op.drop_index('uq_port_allocations_live_port', table_name='port_allocations', postgresql_where=sa.text('released_at IS NULL'))
    op.drop_index('ix_port_allocations_rental', table_name='port_allocations')
    op.drop_table('port_allocations')
    op.drop_index('uq_rentals_one_live_per_node', table_name='rentals', postgresql_where=sa.text("status IN ('pending', 'active')"))
    op.drop_index('ix_rentals_status', table_name='rentals')
    op.drop_index('ix_rentals_renter_created', table_name='rentals')
    op.drop_index(op.f('ix_rentals_node_id'), table_name='rentals')
    op.drop_table('rentals')
    op.drop_index('ix_node_status_events_node_at', table_name='node_status_events')
    op.drop_table('node_status_events')
    op.drop_index(op.f('ix_node_api_keys_node_id'), table_name='node_api_keys')
    op.drop_table('node_api_keys')
    op.drop_table('idempotency_keys')
    op.drop_index(op.f('ix_host_nodes_owner_id'), table_name='host_nodes')
    op.drop_table('host_nodes')
    op.drop_table('users')
    for enum_name in ('transaction_type', 'rental_status', 'node_status', 'role'):
        sa.Enum(name=enum_name).drop(op.get_bind(), checkfirst=True)
