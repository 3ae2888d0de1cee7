"""The agent WebSocket endpoint /ws/agent (flask-sock). See app/ws/bridge.py."""
