from flask_smorest import Blueprint

blp = Blueprint("proxy", __name__, url_prefix="/api/v1", description="Proxy")
