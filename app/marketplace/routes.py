from flask_smorest import Blueprint

blp = Blueprint("marketplace", __name__, url_prefix="/api/v1", description="Marketplace")
