from flask_smorest import Blueprint

blp = Blueprint("pricing", __name__, url_prefix="/api/v1", description="Pricing")
